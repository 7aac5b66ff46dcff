"""A software prefetch hint for numba kernels that gather rows in an unpredictable order.

Below the root a node's rows are an ascending but sparse subset of all rows, so every gather
``X[rows[i]]`` is a cache miss the hardware prefetcher cannot foresee. Asking for the row a few
iterations ahead (``llvm.prefetch``) overlaps those misses with the work on earlier rows. The
hint has no semantics: results are identical with or without it.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, arr, index):
    """``prefetch(arr, i)``: hint that ``arr[i]`` (1-D, any stride) or ``arr.flat[i]`` (C-order
    array of more dimensions) will be read soon.

    An out-of-range ``i`` is harmless (a prefetch never faults) but wasteful, so callers keep it
    in range.
    """
    if not isinstance(arr, types.Array) or not isinstance(index, types.Integer):
        return None
    if arr.ndim > 1 and arr.layout != "C":
        return None
    sig = types.void(arr, index)

    def codegen(context, builder, signature, args):
        arr_type, index_type = signature.args
        array = context.make_array(arr_type)(context, builder, args[0])
        i = context.cast(builder, args[1], index_type, types.intp)
        if arr_type.ndim == 1:
            address = cgutils.get_item_pointer(context, builder, arr_type, array, [i],
                                               wraparound=False)
        else:
            address = builder.gep(array.data, [i])
        i8_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn_type = ir.FunctionType(ir.VoidType(), [i8_ptr, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fn_type, "llvm.prefetch.p0")
        # (address, read = 0, locality = 3: keep in all cache levels, data cache = 1)
        builder.call(fn, [builder.bitcast(address, i8_ptr), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen
