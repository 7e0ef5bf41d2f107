// Causal self-attention for training on CPU, forward and backward, as two XLA FFI custom calls
// (cellax/models/attention_kernel.py). FlashAttention's algorithm (Dao et al., 2022): the forward
// keeps only the output O and the log-sum-exp l of each query; the backward recomputes the weights
// P = exp(S - l) row block by row block, with D_t = dO_t . O_t,
//
//   dV = P^T dO,   dS = P * (dO V^T - D),   dQ = dS K / sqrt(d),   dK = dS^T Q / sqrt(d),
//
// and S_ts = q_t . k_s / sqrt(d) - m_h (t - s) for s <= t (m_h: ALiBi's slope of head h, or 0).
//
// XLA:CPU runs the same algorithm written in JAX as hundreds of small kernels per step (per block
// and head: the score matmul, its masking, exp, the weighted sums, each a separate pass through
// memory). Here one (sequence, head) is one task on XLA's CPU thread pool: its keys and values are
// copied once into transposed / padded scratch that stays in L1-L2, and each block of kRows query
// rows shares every key and value load. Float32 throughout; equal to the dense attention up to the
// summation order and the polynomial exp (tested to ~1e-6).
//
// The input is the attention's projection as one array, so that neither pass splits, rotates or
// concatenates it in XLA: qkv (..., T, H + 2G, d) holds per position the H query heads, then the G key
// heads, then the G value heads (any leading batch axes, flattened); query head h reads key/value head
// h / (H / G). With rope_theta > 0 the kernel applies rotary position embedding to queries and keys on
// the halves layout (pair i is (x_i, x_{i + d/2}), rotated by t theta^(-2i/d) at position t = 0 ... T-1)
// and its transpose to their gradients. out (..., T, H, d); lse (..., H, T); slopes (H) or (..., H);
// the backward returns dqkv like qkv.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "pool.h"
#include "vec.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace cellax;

constexpr int64_t kRows = 8;       // query rows per block: they share every key and value load
constexpr int64_t kMaxVectors = 8;  // head dimension up to kMaxVectors * kLanes = 128

const vf kIota = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

struct Shape {
  int64_t batch, T, H, G, d, vectors;  // vectors: 1, 2, 4 or 8 vectors of kLanes hold a padded head row
  int64_t Tp() const { return (T + kLanes - 1) / kLanes * kLanes; }  // keys, padded to whole vectors
  int64_t Tr() const { return (T + kRows - 1) / kRows * kRows; }     // queries, padded to whole blocks
  int64_t dp() const { return vectors * kLanes; }
  int64_t rep() const { return H / G; }
  int64_t stride() const { return (H + 2 * G) * d; }  // between positions in qkv
  int64_t per_batch() const { return T * stride(); }
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(d)); }
};

// Rotary embedding's tables at positions t < T, (T, d) each: cos = [c, c] and sin = [-s, s] with c, s the
// cos and sin of t theta^(-i/(d/2)), i < d/2 (the angle rounded to float as the JAX model rounds it), so
// that the rotation of row x is x cos + swap(x) sin, swap exchanging the halves. Empty for theta = 0.
struct Rotation {
  int64_t half = 0, d = 0;
  std::vector<float> cos, sin;
  Rotation() = default;  // no rotation
  Rotation(const Shape& s, float theta) {
    if (theta <= 0.0f) return;
    half = s.d / 2;
    d = s.d;
    cos.resize(s.T * d);
    sin.resize(s.T * d);
    for (int64_t i = 0; i < half; ++i) {
      const float frequency = std::pow(theta, -static_cast<float>(i) / static_cast<float>(half));
      for (int64_t t = 0; t < s.T; ++t) {
        const double angle = static_cast<float>(t) * frequency;
        const float c = static_cast<float>(std::cos(angle)), n = static_cast<float>(std::sin(angle));
        cos[t * d + i] = cos[t * d + half + i] = c;
        sin[t * d + i] = -n;
        sin[t * d + half + i] = n;
      }
    }
  }
};

// dst (dp floats, zero-padded) = scale R_t x for the d floats at x, R_t the rotation at position t (or its
// transpose), or scale x without rotation. One vector and a swap of its halves for d = 16.
void rotate(const Shape& s, const Rotation& rot, const float* x, int64_t t, float scale, bool transpose, float* dst) {
  if (rot.half == 0) {
    for (int64_t i = 0; i < s.dp(); i += kLanes) store(dst + i, scale * load(x + i, s.d - i));
    return;
  }
  const float *c = rot.cos.data() + t * s.d, *n = rot.sin.data() + t * s.d;
  const float sign = transpose ? -scale : scale;
  if (s.d == kLanes) {
    const vf v = load(x);
    const vf w = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    store(dst, scale * v * load(c) + sign * w * load(n));
    return;
  }
  if (rot.half % kLanes == 0) {
    for (int64_t i = 0; i < rot.half; i += kLanes) {
      const vf x1 = load(x + i), x2 = load(x + rot.half + i);
      store(dst + i, scale * x1 * load(c + i) + sign * x2 * load(n + i));
      store(dst + rot.half + i, scale * x2 * load(c + rot.half + i) + sign * x1 * load(n + rot.half + i));
    }
  } else {
    for (int64_t i = 0; i < rot.half; ++i) {
      dst[i] = scale * x[i] * c[i] + sign * x[i + rot.half] * n[i];
      dst[i + rot.half] = scale * x[i + rot.half] * c[i + rot.half] + sign * x[i] * n[i + rot.half];
    }
  }
  std::fill(dst + s.d, dst + s.dp(), 0.0f);
}

// Row t of a head (d floats at x) as dst (dp floats, zero-padded): rotated by position t, times scale.
inline void load_row(const Shape& s, const Rotation& rot, const float* x, int64_t t, float scale, float* dst) {
  rotate(s, rot, x, t, scale, false, dst);
}

// The gradient of load_row's input from that of its output g (dp floats): the rotation transposed, times
// scale, written to the d floats at x. `row` is dp floats of scratch.
inline void store_gradient(const Shape& s, const Rotation& rot, const float* g, int64_t t, float scale, float* x,
                           float* row) {
  rotate(s, rot, g, t, scale, true, row);
  for (int64_t i = 0; i < s.d; i += kLanes) store(x + i, load(row + i), s.d - i);
}

// Rows t < T of a head (d floats each, `stride` apart from x) as xp (Tr, dp): rotated, times scale, zero
// beyond T. Loaded in one pass before the blocks need them: the strided rows come from L2/L3, and
// independent loads in a loop overlap their latency, where a block's rows at a time did not.
void load_rows(const Shape& s, const Rotation& rot, const float* x, int64_t stride, float scale, float* xp) {
  for (int64_t t = 0; t < s.T; ++t) load_row(s, rot, x + t * stride, t, scale, xp + t * s.dp());
  std::fill(xp + s.T * s.dp(), xp + s.Tr() * s.dp(), 0.0f);
}

// Every position's row of one head of qkv (at x) as xp (Tr, dp) and, unless xt is null, transposed as
// xt (d, Tp), zero-padded.
void load_head(const Shape& s, const Rotation& rot, const float* x, float* xp, float* xt) {
  load_rows(s, rot, x, s.stride(), 1.0f, xp);
  if (xt == nullptr) return;
  const int64_t Tp = s.Tp(), dp = s.dp();
  for (int64_t i = 0; i < s.d; ++i)
    for (int64_t j = 0; j < Tp; ++j) xt[i * Tp + j] = j < s.T ? xp[j * dp + i] : 0.0f;
}

// out[r, c kLanes : (c + 1) kLanes] = a[r, :d] . bt[:d, c kLanes : ...] for the kRows rows of a (dp wide)
// and the first `chunks` vectors of columns of bt (d, Tp).
void row_products(const Shape& s, const float* a, const float* bt, int64_t chunks, float* out) {
  const int64_t Tp = s.Tp(), dp = s.dp();
  for (int64_t c = 0; c < chunks; ++c) {
    vf acc[kRows] = {};
    const float* column = bt + c * kLanes;
    for (int64_t i = 0; i < s.d; ++i) {
      const vf b = load(column + i * Tp);
      for (int64_t r = 0; r < kRows; ++r) acc[r] += a[r * dp + i] * b;
    }
    for (int64_t r = 0; r < kRows; ++r) store(out + r * Tp + c * kLanes, acc[r]);
  }
}

// gt[:d, c kLanes : (c + 1) kLanes] += a[:, :d]^T w[:, c kLanes : ...] for the kRows rows of a (dp wide) and w
// (Tp wide) and the first `chunks` vectors of columns of gt (d, Tp): a gradient with respect to keys or
// values, accumulated transposed so that each key vector's kRows weights stay in registers.
void accumulate_columns(const Shape& s, const float* w, const float* a, int64_t chunks, float* gt) {
  const int64_t Tp = s.Tp(), dp = s.dp();
  for (int64_t c = 0; c < chunks; ++c) {
    vf wv[kRows];
    for (int64_t r = 0; r < kRows; ++r) wv[r] = load(w + r * Tp + c * kLanes);
    float* column = gt + c * kLanes;
    for (int64_t i = 0; i < s.d; ++i) {
      vf acc = load(column + i * Tp);
      for (int64_t r = 0; r < kRows; ++r) acc += a[r * dp + i] * wv[r];
      store(column + i * Tp, acc);
    }
  }
}

// acc[r] = sum_{j < keys} w[r, j] xp[j, :] for the kRows rows of w (Tp wide) and the rows of xp (keys, ND kLanes).
template <int ND>
void weighted_rows(const float* w, int64_t Tp, const float* xp, int64_t keys, vf (&acc)[kRows][ND]) {
  for (int64_t r = 0; r < kRows; ++r)
    for (int e = 0; e < ND; ++e) acc[r][e] = vf{};
  for (int64_t j = 0; j < keys; ++j) {
    vf x[ND];
    for (int e = 0; e < ND; ++e) x[e] = load(xp + (j * ND + e) * kLanes);
    for (int64_t r = 0; r < kRows; ++r) {
      const float wj = w[r * Tp + j];
      for (int e = 0; e < ND; ++e) acc[r][e] += wj * x[e];
    }
  }
}

// Keys c kLanes ... (c + 1) kLanes - 1 of query t's row of logits: minus ALiBi's m (t - s), -inf for s > t.
inline vf logits(const float* row, int64_t c, float t, float slope, vf* key) {
  *key = kIota + static_cast<float>(c * kLanes);
  const vf x = load(row + c * kLanes) - slope * (t - *key);
  return *key > t ? -INFINITY : x;
}

// One head of one sequence: out (T rows at stride H d) and lse (T).
template <int ND>
void forward_head(const Shape& s, const Rotation& rot, const float* q, const float* k, const float* v, float slope,
                  float* out, float* lse, float* scratch) {
  const int64_t Tp = s.Tp(), dp = s.dp(), ostride = s.H * s.d;
  float* kp = scratch;           // (T, dp)
  float* kt = kp + s.T * dp;     // (d, Tp)
  float* vp = kt + s.d * Tp;     // (T, dp)
  float* qp = vp + s.T * dp;     // (Tr, dp): the queries / sqrt(d)
  float* p = qp + s.Tr() * dp;   // (kRows, Tp): a block's logits, then weights
  const Rotation none;
  load_head(s, rot, k, kp, kt);
  load_head(s, none, v, vp, nullptr);
  load_rows(s, rot, q, s.stride(), s.scale(), qp);
  for (int64_t t0 = 0; t0 < s.T; t0 += kRows) {
    const int64_t rows = std::min(kRows, s.T - t0), keys = t0 + rows, chunks = (keys + kLanes - 1) / kLanes;
    row_products(s, qp + t0 * dp, kt, chunks, p);
    float inverse[kRows] = {};
    for (int64_t r = 0; r < rows; ++r) {
      float* row = p + r * Tp;
      const float t = static_cast<float>(t0 + r);
      vf key, top = vf{} - INFINITY;
      for (int64_t c = 0; c < chunks; ++c) {
        const vf x = logits(row, c, t, slope, &key);
        top = x > top ? x : top;
        store(row + c * kLanes, x);
      }
      const float m = max_lanes(top);
      vf total = {};
      for (int64_t c = 0; c < chunks; ++c) {
        key = kIota + static_cast<float>(c * kLanes);
        const vf e = exp_poly(load(row + c * kLanes) - m);
        const vf w = key > t ? 0.0f : e;
        total += w;
        store(row + c * kLanes, w);
      }
      const float l = sum(total);
      lse[t0 + r] = m + std::log(l);
      inverse[r] = 1.0f / l;
    }
    vf acc[kRows][ND];
    weighted_rows<ND>(p, Tp, vp, keys, acc);
    for (int64_t r = 0; r < rows; ++r) {
      float* o = out + (t0 + r) * ostride;
      for (int e = 0; e < ND; ++e) store(o + e * kLanes, acc[r][e] * inverse[r], s.d - e * kLanes);
    }
  }
}

// The gradients of key/value head g's query heads (dq) and of its key and value (dk, dv, summed over
// those heads), all in dqkv's layout.
template <int ND>
void backward_group(const Shape& s, const Rotation& rot, const float* qkv, const float* slopes, const float* out,
                    const float* lse, const float* dout, int64_t g, float* dqkv, float* scratch) {
  const int64_t Tp = s.Tp(), dp = s.dp(), ostride = s.H * s.d;
  float* kp = scratch;            // (Tr, dp)
  float* kt = kp + s.Tr() * dp;   // (d, Tp)
  float* vp = kt + s.d * Tp;      // (Tr, dp): the values before transposing
  float* vt = vp + s.Tr() * dp;   // (d, Tp)
  float* dkt = vt + s.d * Tp;     // (d, Tp): dK transposed
  float* dvt = dkt + s.d * Tp;    // (d, Tp): dV transposed
  float* qp = dvt + s.d * Tp;     // (Tr, dp): the queries / sqrt(d)
  float* dop = qp + s.Tr() * dp;  // (Tr, dp): dO
  float* delta = dop + s.Tr() * dp;  // (T): dO_t . O_t
  float* dq = delta + s.T;        // (kRows, dp)
  float* p = dq + kRows * dp;     // (kRows, Tp): weights
  float* ds = p + kRows * Tp;     // (kRows, Tp): dP, then dS
  float* row = ds + kRows * Tp;   // (dp)
  const Rotation none;
  const int64_t k_offset = (s.H + g) * s.d, v_offset = (s.H + s.G + g) * s.d;
  load_head(s, rot, qkv + k_offset, kp, kt);
  load_head(s, none, qkv + v_offset, vp, vt);
  std::fill(dkt, dkt + 2 * s.d * Tp, 0.0f);
  for (int64_t h = g * s.rep(); h < (g + 1) * s.rep(); ++h) {
    const float slope = slopes[h];
    const float* lh = lse + h * s.T;
    load_rows(s, rot, qkv + h * s.d, s.stride(), s.scale(), qp);
    load_rows(s, none, dout + h * s.d, ostride, 1.0f, dop);
    for (int64_t t = 0; t < s.T; ++t) {
      const float* o = out + t * ostride + h * s.d;
      vf acc = {};
      for (int64_t i = 0; i < s.d; i += kLanes) acc += load(dop + t * dp + i) * load(o + i, s.d - i);
      delta[t] = sum(acc);
    }
    for (int64_t t0 = 0; t0 < s.T; t0 += kRows) {
      const int64_t rows = std::min(kRows, s.T - t0), keys = t0 + rows, chunks = (keys + kLanes - 1) / kLanes;
      const float *qs = qp + t0 * dp, *dos = dop + t0 * dp;
      row_products(s, qs, kt, chunks, p);
      row_products(s, dos, vt, chunks, ds);
      for (int64_t r = 0; r < kRows; ++r) {
        float* prow = p + r * Tp;
        float* dsrow = ds + r * Tp;
        if (r >= rows) {
          std::fill(prow, prow + chunks * kLanes, 0.0f);
          std::fill(dsrow, dsrow + chunks * kLanes, 0.0f);
          continue;
        }
        const float t = static_cast<float>(t0 + r), l = lh[t0 + r], dt = delta[t0 + r];
        for (int64_t c = 0; c < chunks; ++c) {
          vf key;
          const vf x = logits(prow, c, t, slope, &key);
          const vf w = key > t ? 0.0f : exp_poly(x - l);
          store(prow + c * kLanes, w);
          store(dsrow + c * kLanes, w * (load(dsrow + c * kLanes) - dt));
        }
      }
      vf acc[kRows][ND];
      weighted_rows<ND>(ds, Tp, kp, keys, acc);
      for (int64_t r = 0; r < rows; ++r) {
        for (int e = 0; e < ND; ++e) store(dq + r * dp + e * kLanes, acc[r][e]);
        store_gradient(s, rot, dq + r * dp, t0 + r, s.scale(), dqkv + (t0 + r) * s.stride() + h * s.d, row);
      }
      accumulate_columns(s, ds, qs, chunks, dkt);
      accumulate_columns(s, p, dos, chunks, dvt);
    }
  }
  for (int64_t t = 0; t < s.T; ++t) {
    for (int64_t i = 0; i < dp; ++i) dq[i] = i < s.d ? dkt[i * Tp + t] : 0.0f;
    store_gradient(s, rot, dq, t, 1.0f, dqkv + t * s.stride() + k_offset, row);
    for (int64_t i = 0; i < dp; ++i) dq[i] = i < s.d ? dvt[i * Tp + t] : 0.0f;
    store_gradient(s, none, dq, t, 1.0f, dqkv + t * s.stride() + v_offset, row);
  }
}

// The shape of qkv (..., T, H + 2G, d) given H, checked against the other buffers' element counts.
ffi::Unexpected<ffi::Error> invalid(const char* message) {
  return ffi::Unexpected<ffi::Error>(ffi::Error::InvalidArgument(message));
}

ffi::ErrorOr<Shape> shape_of(ffi::Buffer<ffi::F32>& qkv, int64_t heads, int64_t slope_count) {
  const auto dims = qkv.dimensions();
  if (dims.size() < 3) return invalid("attention kernel: qkv (..., T, H + 2G, d) expected");
  const int64_t T = dims[dims.size() - 3], rows = dims[dims.size() - 2], d = dims.back();
  if (heads <= 0 || (rows - heads) <= 0 || (rows - heads) % 2 || heads % ((rows - heads) / 2))
    return invalid("attention kernel: qkv's H + 2G rows must hold G key/value heads dividing H");
  if (d > kMaxVectors * kLanes) return invalid("attention kernel: head dimension above 128");
  int64_t vectors = 1;
  while (vectors * kLanes < d) vectors *= 2;
  const Shape s{static_cast<int64_t>(qkv.element_count()) / std::max<int64_t>(T * rows * d, 1), T, heads,
                (rows - heads) / 2, d, vectors};
  if (slope_count != s.H && slope_count != s.batch * s.H)
    return invalid("attention kernel: slopes (H) or (..., H) expected");
  return s;
}

int64_t scratch_floats(const Shape& s) {
  return 4 * s.Tr() * s.dp() + 4 * s.d * s.Tp() + s.T + (kRows + 1) * s.dp() + 2 * kRows * s.Tp();
}

// The head-dimension vector count as a compile-time constant (the accumulators stay in registers).
template <class F>
void dispatch(int64_t vectors, const F& f) {
  switch (vectors) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 4: return f(std::integral_constant<int, 4>{});
    default: return f(std::integral_constant<int, kMaxVectors>{});
  }
}

float* thread_scratch(int64_t floats) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < floats) buffer.resize(floats);
  return buffer.data();
}

ffi::Error ForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv, ffi::Buffer<ffi::F32> slopes,
                       ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> lse, int64_t heads,
                       float rope_theta) {
  const auto shape = shape_of(qkv, heads, slopes.element_count());
  if (shape.has_error()) return shape.error();
  const Shape s = shape.value();
  const Rotation rot(s, rope_theta);
  const bool shared = static_cast<int64_t>(slopes.element_count()) == s.H;
  dispatch(s.vectors, [&](auto nd) {
    constexpr int ND = decltype(nd)::value;
    parallel_for(pool, s.batch * s.H, [&](int64_t item) {
      const int64_t b = item / s.H, h = item % s.H, g = h / s.rep();
      const float* x = qkv.typed_data() + b * s.per_batch();
      forward_head<ND>(s, rot, x + h * s.d, x + (s.H + g) * s.d, x + (s.H + s.G + g) * s.d,
                       slopes.typed_data()[(shared ? 0 : b * s.H) + h], out->typed_data() + b * s.T * s.H * s.d + h * s.d,
                       lse->typed_data() + (b * s.H + h) * s.T, thread_scratch(scratch_floats(s)));
    });
  });
  return ffi::Error::Success();
}

ffi::Error BackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv, ffi::Buffer<ffi::F32> slopes,
                        ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> lse, ffi::Buffer<ffi::F32> dout,
                        ffi::ResultBuffer<ffi::F32> dqkv, int64_t heads, float rope_theta) {
  const auto shape = shape_of(qkv, heads, slopes.element_count());
  if (shape.has_error()) return shape.error();
  const Shape s = shape.value();
  const Rotation rot(s, rope_theta);
  const bool shared = static_cast<int64_t>(slopes.element_count()) == s.H;
  dispatch(s.vectors, [&](auto nd) {
    constexpr int ND = decltype(nd)::value;
    parallel_for(pool, s.batch * s.G, [&](int64_t item) {
      const int64_t b = item / s.G, g = item % s.G, o = b * s.T * s.H * s.d;
      backward_group<ND>(s, rot, qkv.typed_data() + b * s.per_batch(), slopes.typed_data() + (shared ? 0 : b * s.H),
                         out.typed_data() + o, lse.typed_data() + b * s.H * s.T, dout.typed_data() + o, g,
                         dqkv->typed_data() + b * s.per_batch(), thread_scratch(scratch_floats(s)));
    });
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CellaxAttentionForward, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // qkv
                                  .Arg<ffi::Buffer<ffi::F32>>()  // slopes
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out
                                  .Ret<ffi::Buffer<ffi::F32>>()  // lse
                                  .Attr<int64_t>("heads")
                                  .Attr<float>("rope_theta"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(CellaxAttentionBackward, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // qkv
                                  .Arg<ffi::Buffer<ffi::F32>>()  // slopes
                                  .Arg<ffi::Buffer<ffi::F32>>()  // out
                                  .Arg<ffi::Buffer<ffi::F32>>()  // lse
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dout
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dqkv
                                  .Attr<int64_t>("heads")
                                  .Attr<float>("rope_theta"));
