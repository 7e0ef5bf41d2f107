// Vector helpers shared by cellax's CPU kernels: 16-float vectors (GCC/Clang vector extensions),
// fixed-size loads and stores with scalar tails, a lane sum by halving, and polynomial exp / log1p.
// No libc calls: inside an XLA call a variable-length memcpy per load cost the Mamba step 2x.
#pragma once

#include <cstdint>

namespace cellax {

// 16 floats per vector (GCC/Clang vector extensions): one AVX-512 register, or two AVX2 ones.
constexpr int64_t kLanes = 16;
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef int32_t vi __attribute__((vector_size(4 * kLanes)));

// Unaligned vector loads and stores (the aligned(…) typedefs), so the compiler emits plain vector moves.
typedef float vf_unaligned __attribute__((vector_size(4 * kLanes), aligned(4)));

// kLanes floats from p; with a count below kLanes, that many, zero-padded.
inline vf load(const float* p) { return *reinterpret_cast<const vf_unaligned*>(p); }

inline vf load(const float* p, int64_t count) {
  if (count >= kLanes) return load(p);
  vf v = {};
  for (int64_t i = 0; i < count; ++i) v[i] = p[i];
  return v;
}

inline void store(float* p, vf v, int64_t count = kLanes) {
  if (count >= kLanes) {
    *reinterpret_cast<vf_unaligned*>(p) = v;
  } else {
    for (int64_t i = 0; i < count; ++i) p[i] = v[i];
  }
}

// The lanes' sum by halving (16 -> 8 -> 4 -> 2 -> 1): four dependent adds, not fifteen.
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));

inline float sum(vf v) {
  vf8 lo, hi;
  __builtin_memcpy(&lo, &v, sizeof lo);
  __builtin_memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
  lo += hi;
  vf4 a, b;
  __builtin_memcpy(&a, &lo, sizeof a);
  __builtin_memcpy(&b, reinterpret_cast<const char*>(&lo) + sizeof a, sizeof b);
  a += b;
  return (a[0] + a[2]) + (a[1] + a[3]);
}

// The lanes' maximum by halving, as sum.
inline float max_lanes(vf v) {
  vf8 lo, hi;
  __builtin_memcpy(&lo, &v, sizeof lo);
  __builtin_memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
  lo = lo > hi ? lo : hi;
  vf4 a, b;
  __builtin_memcpy(&a, &lo, sizeof a);
  __builtin_memcpy(&b, reinterpret_cast<const char*>(&lo) + sizeof a, sizeof b);
  a = a > b ? a : b;
  const float x = a[0] > a[2] ? a[0] : a[2], y = a[1] > a[3] ? a[1] : a[3];
  return x > y ? x : y;
}

// exp by range reduction x = k ln2 + r, |r| <= ln2 / 2, and a degree-6 polynomial (Cephes expf);
// relative error ~1e-7 on [-87, 88], where it clamps. k is rounded by adding and subtracting
// 1.5 * 2^23, and 2^k is built from its exponent bits.
inline vf exp_poly(vf x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float magic = 12582912.0f;
  const vf k = (x * 1.44269504088896341f + magic) - magic;
  const vf r = x - k * 0.693359375f + k * 2.12194440e-4f;
  vf p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const vi bits = __builtin_convertvector(k + 127.0f, vi) << 23;
  return p * reinterpret_cast<const vf&>(bits);
}

// log1p(e) for e in [0, 1] as 2 atanh(s), s = e / (2 + e) in [0, 1/3]: no 1 + e is formed, so
// small e keep their bits. Series to s^15: truncation below 2e-9 relative.
inline vf log1p_unit(vf e) {
  const vf s = e / (e + 2.0f);
  const vf s2 = s * s;
  vf p = s2 * (1.0f / 15.0f) + 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}

}  // namespace cellax
