"""The polynomial of xent's float exp (include/xent/detail/simd/math.hpp, exp_clamped).

e^r on [-ln 2 / 2, ln 2 / 2] by a Chebyshev fit (near-minimax) on a 1% wider interval (r carries the
rounding of the Cody-Waite reduction), converted to monomial coefficients and rounded to float. The
degree-6 row is the one the header uses (printed as hex floats); its relative error, about 2e-8
(0.33 ulp), leaves room for the 7 fused multiply-adds of Horner's rule within the 2 ulp budget.

Rerun: /usr/bin/python3 tools/exp_coefficients.py   (needs numpy: apt-get install python3-numpy)
"""
import numpy as np
from numpy.polynomial import chebyshev as C, polynomial as P
a = np.log(2)/2
for deg in (5,6):
    # fit on Chebyshev nodes (near-minimax), with a tiny widening for rounding of r
    b = a*1.01
    x = np.cos(np.pi*(np.arange(2000)+0.5)/2000)*b
    y = np.exp(x)
    c = C.chebfit(x/b, y, deg)
    pc = C.cheb2poly(c)
    mono = pc / b**np.arange(deg+1)
    mono32 = mono.astype(np.float32)
    xs = np.linspace(-a,a,200001)
    err = np.max(np.abs(P.polyval(xs, mono32.astype(np.float64))/np.exp(xs)-1))
    print(deg, [float(v).hex() for v in mono32], [repr(float(v)) for v in mono32], err, err/2**-24)
