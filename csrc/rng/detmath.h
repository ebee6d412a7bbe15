// Deterministic elementary functions and the normal inverse-CDF table.
//
// Only IEEE-exact operations (+, -, *, /, floor, frexp, ldexp) in a fixed order: libm's exp/log
// differ in their last bits between platforms and from numpy, which would desynchronise encoder
// and decoder. Compile with -ffp-contract=off (C++) / --fmad=false (CUDA): no FMA contraction.
// python/fastdiffc/rcc_numpy.py implements the same sequence of operations.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "rng/philox.h"

namespace fastdiffc::rng {

constexpr double kLn2Hi = 6.93147180369123816490e-01;  // n * kLn2Hi is exact for |n| < 2^20
constexpr double kLn2Lo = 1.90821492927058770002e-10;
constexpr double kLog2e = 1.44269504088896338700e+00;
constexpr double kSqrtHalf = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr int kNormalTableSize = 65536;

// exp(y) for y <= 0: range reduction by ln 2 and an 18-term Taylor polynomial.
FASTDIFFC_HD double det_exp(double y) {
  const double n = floor(y * kLog2e + 0.5);
  const double r = (y - n * kLn2Hi) - n * kLn2Lo;
  double e = 1.0;
  for (int k = 18; k >= 1; --k) e = 1.0 + e * r / static_cast<double>(k);
  return ldexp(e, static_cast<int>(n));
}

// det_log for a positive normal double (no zero, subnormal, inf or NaN): branch-free so loops of
// it vectorise. Same operations, hence the same bits, as det_log.
FASTDIFFC_HD double det_log_normal(double x) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof(bits));
  int64_t e = static_cast<int64_t>((bits >> 52) & 0x7FFu) - 1022;  // frexp by bit surgery (exact)
  bits = (bits & ~(uint64_t{0x7FF} << 52)) | (uint64_t{1022} << 52);
  double m;
  memcpy(&m, &bits, sizeof(m));
  const bool small = m < kSqrtHalf;
  m = small ? m * 2.0 : m;
  e = small ? e - 1 : e;
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double poly = 1.0 / 25.0;
  for (int k = 11; k >= 0; --k) poly = 1.0 / static_cast<double>(2 * k + 1) + s2 * poly;
  const double ed = static_cast<double>(e);
  return ed * kLn2Hi + (ed * kLn2Lo + 2.0 * s * poly);
}

// log(x) for x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m-1)/(m+1)).
FASTDIFFC_HD double det_log(double x) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof(bits));
  const uint64_t biased = (bits >> 52) & 0x7FFu;
  if (biased != 0 && biased != 0x7FFu) return det_log_normal(x);
  int e = 0;
  double m = frexp(x, &e);  // subnormal input (never produced by RCC; kept exact for completeness)
  if (m < kSqrtHalf) {
    m = m * 2.0;
    e -= 1;
  }
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double poly = 1.0 / 25.0;
  for (int k = 11; k >= 0; --k) poly = 1.0 / static_cast<double>(2 * k + 1) + s2 * poly;
  const double ed = static_cast<double>(e);
  return ed * kLn2Hi + (ed * kLn2Lo + 2.0 * s * poly);
}

// Phi(x) for x <= 0: series above -3, Mills-ratio continued fraction below.
inline double det_normal_cdf_nonpositive(double x) {
  const double phi = det_exp(-0.5 * x * x) * kInvSqrt2Pi;
  if (x < -3.0) {
    const double t = -x;
    double f = t;
    for (int k = 200; k >= 1; --k) f = t + static_cast<double>(k) / f;
    return phi / f;
  }
  double term = x, total = x;
  const double x2 = x * x;
  for (int n = 1; n <= 60; ++n) {
    term = term * x2 / static_cast<double>(2 * n + 1);
    total = total + term;
  }
  return 0.5 + phi * total;
}

// Acklam's rational approximation of the normal quantile for 0 < p <= 1/2 (relative error ~1e-9):
// only the starting point of Newton's method below.
inline double quantile_guess(double p) {
  static constexpr double a[6] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                  1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[5] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                  6.680131188771972e+01,  -1.328068155288572e+01};
  static constexpr double c[6] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                  -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[4] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                  3.754408661907416e+00};
  if (p < 0.02425) {
    const double t = std::sqrt(-2.0 * det_log(p));
    double num = c[0], den = d[0];
    for (int i = 1; i < 6; ++i) num = num * t + c[i];
    for (int i = 1; i < 4; ++i) den = den * t + d[i];
    return num / (den * t + 1.0);
  }
  const double q = p - 0.5;
  const double r = q * q;
  double num = a[0], den = b[0];
  for (int i = 1; i < 6; ++i) num = num * r + a[i];
  for (int i = 1; i < 5; ++i) den = den * r + b[i];
  return num * q / (den * r + 1.0);
}

// table[k] = Phi^-1((k + 1/2) / 65536) rounded to float32; table[65535 - k] = -table[k] exactly.
inline void build_normal_table(float* table) {
  for (int k = 0; k < kNormalTableSize / 2; ++k) {
    const double p = (static_cast<double>(k) + 0.5) / 65536.0;
    double x = quantile_guess(p);
    for (int it = 0; it < 3; ++it) {
      const double pdf = det_exp(-0.5 * x * x) * kInvSqrt2Pi;
      x = x - (det_normal_cdf_nonpositive(x) - p) / pdf;
    }
    const float v = static_cast<float>(x);
    table[k] = v;
    table[kNormalTableSize - 1 - k] = -v;
  }
}

}  // namespace fastdiffc::rng
