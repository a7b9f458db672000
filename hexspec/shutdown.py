"""Whether SIGTERM asked this process to stop (set by the handlers of the command line)."""

import threading

#: set when SIGTERM arrived; the command line then exits as soon as its files are closed
TERMINATED = threading.Event()
