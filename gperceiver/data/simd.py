"""Vector kernels that numba's compiler does not find by itself, as LLVM intrinsics.

`compress_lanes` writes the positions of those of 16 uint32 values inside
[lo, hi) to a compact array: one step of a stream compaction
(`kernels.positions_in_range` runs it over an array). Written as a scalar loop,
the store position depends on every earlier value, and the loop runs at about
one value per 3 cycles. Here 16 values are compared at once and their positions
stored with LLVM's masked compress-store (`vpcompressd` on AVX-512), about 6x
faster in the target draws. Without AVX-512, LLVM expands the same intrinsic
lane by lane: the result is the same.

`transpose_tile` moves an 8 x 8 tile of integers (a call's copies as one
integer) from variants-major chunk rows to samples-major buffer rows with eight
vector loads, three rounds of interleaving and eight vector stores, where a
scalar loop moves one item per load and store: the loader's chunk transpose
took about a third of the time of decompressing the chunk, now about a tenth.
Both are written in LLVM IR through numba's `intrinsic`, and called from the
compiled kernels in `kernels`; the tests check them against numpy on every path
(including CPUs named `generic` and `haswell`, checked by hand with
NUMBA_CPU_NAME).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 16  # `compress_lanes` compares 16 uint32 values at once


@intrinsic
def compress_lanes(typingctx, values, start, lo, hi, out, count):
    """Positions start..start+15 of `values` (uint32, C order) with lo <= value < hi,
    stored at out[count:] (int32); returns how many."""
    if not (values.layout == out.layout == "C" and values.dtype == types.uint32
            and out.dtype == types.int32):
        return None  # contiguous uint32 values, contiguous int32 positions only
    sig = types.int64(values, types.int64, types.uint32, types.uint32, out, types.int64)

    def codegen(context, builder, signature, args):
        values_, start_, lo_, hi_, out_, count_ = args
        source = context.make_array(signature.args[0])(context, builder, values_)
        target = context.make_array(signature.args[4])(context, builder, out_)
        i32 = ir.IntType(32)
        ints = ir.VectorType(i32, LANES)

        def splat(value):
            one = builder.insert_element(ir.Constant(ints, None), value, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, one, ir.Constant(ints, [0] * LANES))

        pointer = builder.gep(source.data, [start_])
        vector = builder.load(builder.bitcast(pointer, ints.as_pointer()), align=4)
        mask = builder.and_(builder.icmp_unsigned(">=", vector, splat(lo_)),
                            builder.icmp_unsigned("<", vector, splat(hi_)))
        positions = builder.add(splat(builder.trunc(start_, i32)),
                                ir.Constant(ints, list(range(LANES))))
        destination = builder.gep(target.data, [count_])
        store = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [ints, destination.type, mask.type]),
            f"llvm.masked.compressstore.v{LANES}i32",
        )
        builder.call(store, [positions, destination, mask])
        selected = builder.ctpop(builder.bitcast(mask, ir.IntType(LANES)))
        return builder.zext(selected, ir.IntType(64))

    return sig, codegen


TILE = 8  # `transpose_tile` moves 8 x 8 items


@intrinsic
def transpose_tile(typingctx, source, first, stride, out, targets):
    """out[targets[c] + r] = source[first + r * stride + c] for r, c in 0..7: an
    8 x 8 tile of items (any integer width) transposed in registers.

    Eight vector loads (8 items each), three rounds of interleaving (round k pairs
    rows k and k + 4: after log2(8) rounds the rows are the columns) and eight
    vector stores; a scalar copy moves one item per load and store.
    `source` and `out` are 1-d, C order, of the same integer type; `targets`
    is a tuple of 8 offsets into `out`."""
    if not (isinstance(source, types.Array) and isinstance(out, types.Array)
            and source.layout == out.layout == "C" and source.ndim == out.ndim == 1
            and source.dtype == out.dtype and isinstance(source.dtype, types.Integer)
            and isinstance(targets, types.UniTuple) and targets.count == TILE):
        return None
    sig = types.void(source, types.int64, types.int64, out, targets)

    def codegen(context, builder, signature, args):
        source_, first_, stride_, out_, targets_ = args
        src = context.make_array(signature.args[0])(context, builder, source_)
        dst = context.make_array(signature.args[3])(context, builder, out_)
        item = context.get_value_type(signature.args[0].dtype)
        vector = ir.VectorType(item, TILE)
        rows = []
        for r in range(TILE):
            offset = builder.add(first_, builder.mul(stride_, ir.Constant(ir.IntType(64), r)))
            pointer = builder.bitcast(builder.gep(src.data, [offset]), vector.as_pointer())
            rows.append(builder.load(pointer, align=1))
        low = ir.Constant(ir.VectorType(ir.IntType(32), TILE), [0, 8, 1, 9, 2, 10, 3, 11])
        high = ir.Constant(ir.VectorType(ir.IntType(32), TILE), [4, 12, 5, 13, 6, 14, 7, 15])
        for _ in range(3):
            rows = [builder.shuffle_vector(rows[k // 2], rows[k // 2 + 4], low if k % 2 == 0
                                           else high) for k in range(TILE)]
        for c in range(TILE):
            offset = builder.extract_value(targets_, c)
            pointer = builder.bitcast(builder.gep(dst.data, [offset]), vector.as_pointer())
            builder.store(rows[c], pointer, align=1)
        return context.get_dummy_value()

    return sig, codegen
