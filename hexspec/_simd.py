"""Four numba intrinsics for the event kernel: two for the threshold scan, two prefetches.

Written by hand because numba exposes none of them, and the scan is the largest single cost
of frames -> events: at ~1% occupancy nearly every pixel is compared and rejected, so the
scan must run at vector speed and then jump straight to the few hits.

``gt_mask64(a, a_start, b, b_start)`` compares the 64 uint16 values a[a_start:a_start+64]
with b[b_start:b_start+64] as one LLVM vector operation and returns the bit mask of a > b
(bit j set when a[a_start+j] > b[b_start+j]). On AVX-512 this is two vpcmpuw into mask
registers; on other x86 CPUs LLVM lowers it to SSE/AVX2 compares and movemasks; the
result is the same everywhere. A plain numba loop building the same mask with shifts
vectorises only to 128-bit compares and ran 1.5x slower in the whole scan
(benchmarks/bench_events.py). ``cttz64(x)`` is LLVM's count-trailing-zeros (tzcnt), the
index of the lowest set bit (64 for zero), so the hits of a block are visited without
testing each pixel. ``prefetch(arr, index)`` and ``prefetch_write(arr, index)`` start
loading a cache line early: the kernel uses them to fetch the next frame, and the cube
counters it is about to increment, while it works on the hits of the current frame
(see hexspec.events._extract_kernel).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core.errors import TypingError
from numba.extending import intrinsic

MASK_LANES = 64
LINE_U16 = 32   # uint16 values per 64-byte cache line


@intrinsic
def cttz64(typingctx, x):
    """Index of the lowest set bit of a uint64; 64 for zero (as the tzcnt instruction gives)."""
    if x != types.uint64:
        raise TypingError(f"cttz64: expected a uint64, found {x}")
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))   # 0: defined for zero

    return sig, codegen


@intrinsic
def gt_mask64(typingctx, a, a_start, b, b_start):
    """Bit mask of a[a_start + j] > b[b_start + j] for j in 0..63 (uint16 C-contiguous 1-D arrays).

    The caller guarantees a_start + 64 <= len(a) and b_start + 64 <= len(b); no bounds are
    checked. (Two starts: the event kernel compares a frame inside a batch of frames with
    the threshold map, without a view of the frame, see hexspec.events._extract_frames.)
    """
    for name, arr in (("a", a), ("b", b)):
        if not (isinstance(arr, types.Array) and arr.dtype == types.uint16 and arr.ndim == 1
                and arr.layout == "C"):
            raise TypingError(f"gt_mask64: expected {name} to be a C-contiguous 1-D uint16 array, found {arr}")
    for name, start in (("a_start", a_start), ("b_start", b_start)):
        if not isinstance(start, types.Integer):
            raise TypingError(f"gt_mask64: expected an integer {name}, found {start}")
    sig = types.uint64(a, a_start, b, b_start)

    def codegen(context, builder, signature, args):
        aty, asty, bty, bsty = signature.args
        arr_a = context.make_array(aty)(context, builder, args[0])
        arr_b = context.make_array(bty)(context, builder, args[2])
        off_a = context.cast(builder, args[1], asty, types.intp)
        off_b = context.cast(builder, args[3], bsty, types.intp)
        vec = ir.VectorType(ir.IntType(16), MASK_LANES).as_pointer()
        va = builder.load(builder.bitcast(builder.gep(arr_a.data, [off_a]), vec), align=2)
        vb = builder.load(builder.bitcast(builder.gep(arr_b.data, [off_b]), vec), align=2)
        return builder.bitcast(builder.icmp_unsigned(">", va, vb), ir.IntType(MASK_LANES))

    return sig, codegen


def _prefetch_codegen(rw):
    def codegen(context, builder, signature, args):
        aty, ity = signature.args
        data = context.make_array(aty)(context, builder, args[0]).data
        offset = context.cast(builder, args[1], ity, types.intp)
        byte_ptr = ir.IntType(8).as_pointer()
        addr = builder.bitcast(builder.gep(data, [offset]), byte_ptr)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [byte_ptr], fnty)
        # read (0) or write (1), keep in all cache levels (locality 3), data cache (1)
        builder.call(fn, [addr, i32(rw), i32(3), i32(1)])
        return context.get_dummy_value()
    return codegen


def _check_array_index(name, arr, index):
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"):
        raise TypingError(f"{name}: expected a C-contiguous 1-D array, found {arr}")
    if not isinstance(index, types.Integer):
        raise TypingError(f"{name}: expected an integer index, found {index}")


@intrinsic
def prefetch(typingctx, arr, index):
    """Ask the CPU to start loading the cache line holding arr[index] (1-D C-contiguous
    array) into all cache levels, without waiting for it: LLVM's llvm.prefetch, the
    prefetcht0 instruction on x86. A prefetch never faults, but callers keep the index in
    bounds anyway.
    """
    _check_array_index("prefetch", arr, index)
    return types.void(arr, index), _prefetch_codegen(0)


@intrinsic
def prefetch_write(typingctx, arr, index):
    """As :func:`prefetch`, for a line about to be written (prefetchw on x86: the line
    arrives ready to be modified)."""
    _check_array_index("prefetch_write", arr, index)
    return types.void(arr, index), _prefetch_codegen(1)
