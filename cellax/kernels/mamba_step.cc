// One streaming step of cellax.models.Mamba as a single CPU kernel (XLA FFI custom call).
//
// XLA:CPU runs Mamba.step as ~77 kernels of about a microsecond each (22 matvecs, the rest small
// elementwise fusions); this computes the same step in one call, so a sample costs the weight
// streaming and the arithmetic, not ~50 dispatches. Single-threaded: its target is one core.
// Float32 throughout: the same operations as the JAX step up to the summation order of the dot
// products and the polynomial exp / log1p below (tested equal to ~1e-6).
//
// Parameters arrive in two vectors (cellax/deploy/fused_mamba.py, `pack`):
//   weights, every linear layer's (out, in) matrix as panels (see matvec):
//     embed (W, F), per layer: in (2D, W), x (R + 2N, D), dt (D, R), out (W, D); head (O, W);
//   small:
//     embed_b (W), per layer: norm (W), conv_w (K, D), conv_b (D), dt_b (D), A = -exp(A_log) (D, N),
//     skip (D); norm (W), head_b (O).
// State (batch, L, D, K - 1 + N): per channel its last K - 1 conv inputs, then its N SSM states.
//
// No libc calls inside the step: with a variable-length memcpy per vector load, the step took
// 170 us inside an XLA call against 88 us called from Python (same code, data and thread), so
// loads and stores are fixed-size (inlined) with scalar tails.

#include <cmath>
#include <cstdint>
#include <vector>

#include "vec.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace cellax;

inline vf silu(vf x) { return x / (exp_poly(-x) + 1.0f); }

// jax.nn.softplus: max(x, 0) + log1p(exp(-|x|)).
inline vf softplus(vf x) {
  const vf positive = x > 0.0f ? x : 0.0f;
  return positive + log1p_unit(exp_poly(x > 0.0f ? -x : x));
}

// x[i] <- f(x[i]) for n floats.
template <class F>
inline void map(float* x, int64_t n, F f) {
  for (int64_t i = 0; i < n; i += kLanes) store(x + i, f(load(x + i, n - i)), n - i);
}

// out = bias + w x for w (rows, cols) stored as panels of kPanel rows (rows padded with zeros to a
// multiple of kPanel): panel p is w[p kPanel : (p + 1) kPanel, :] transposed, (cols, kPanel)
// row-major. Each panel's outputs stay in registers while its weights stream by once, in order;
// bias may be null.
constexpr int64_t kPanel = 4 * kLanes;

inline int64_t padded(int64_t rows) { return (rows + kPanel - 1) / kPanel * kPanel; }

void matvec(const float* w, const float* x, const float* bias, int64_t rows, int64_t cols, float* out) {
  constexpr int64_t kBlocks = kPanel / kLanes;
  for (int64_t i0 = 0; i0 < rows; i0 += kPanel) {
    vf acc[kBlocks];
    for (int64_t k = 0; k < kBlocks; ++k) acc[k] = bias ? load(bias + i0 + k * kLanes, rows - i0 - k * kLanes) : vf{};
    const float* panel = w + i0 * cols;
    for (int64_t j = 0; j < cols; ++j) {
      const float xj = x[j];
      for (int64_t k = 0; k < kBlocks; ++k) acc[k] += xj * load(panel + j * kPanel + k * kLanes);
    }
    for (int64_t k = 0; k < kBlocks; ++k) store(out + i0 + k * kLanes, acc[k], rows - i0 - k * kLanes);
  }
}

// eqx.nn.RMSNorm without bias: w * x / sqrt(mean(x^2) + eps).
void rms_norm(const float* x, const float* w, int64_t n, float eps, float* out) {
  float total = 0.0f;
  for (int64_t j = 0; j < n; ++j) total += x[j] * x[j];
  const float inv = 1.0f / std::sqrt(total / static_cast<float>(n) + eps);
  for (int64_t j = 0; j < n; ++j) out[j] = w[j] * (x[j] * inv);
}

// One channel's h <- exp(dt a) h + du B, returning C . h; h_out may be h_in. The common N = kLanes
// takes one vector and no tail checks (the general loop: 38 against 24 us per sample, four layers).
inline float ssm_update(const float* a, const float* h_in, float* h_out, const float* B, const float* C, float dt,
                        float du, int64_t N) {
  if (N == kLanes) {
    const vf hv = exp_poly(dt * load(a)) * load(h_in) + du * load(B);
    store(h_out, hv);
    return sum(hv * load(C));
  }
  vf acc = {};
  for (int64_t n = 0; n < N; n += kLanes) {
    const vf hv = exp_poly(dt * load(a + n, N - n)) * load(h_in + n, N - n) + du * load(B + n, N - n);
    acc += hv * load(C + n, N - n);
    store(h_out + n, hv, N - n);
  }
  return sum(acc);
}

struct Dims {
  int64_t F, W, L, D, N, K, R, O;
  int64_t row() const { return K - 1 + N; }
  int64_t weights() const {
    return padded(W) * F + L * (padded(2 * D) * W + padded(R + 2 * N) * D + padded(D) * R + padded(W) * D) +
           padded(O) * W;
  }
  int64_t small() const { return W + L * (W + K * D + D + D + D * N + D) + W + O; }
  int64_t scratch() const { return 4 * W + 6 * D + R + 2 * N + 2 * kLanes; }
};

// One cell's step: reads x (F) and state (L, D, K-1+N), writes y (O) and the new state. The new
// state may be the old one's buffer (a donated state): each channel's row is read before it is
// overwritten.
void cell_step(const Dims& d, const float* w, const float* s, float eps, const float* x, const float* state, float* y,
               float* next, float* scratch) {
  const int64_t W = d.W, D = d.D, N = d.N, K = d.K, R = d.R, row = d.row();
  float* h = scratch;
  float* hn = h + W;
  float* uz = hn + W;              // 2D: u then z
  float* uc = uz + 2 * D;          // D: conv output after SiLU
  float* sel = uc + D;             // R + 2N: dt_low, B, C
  float* delta = sel + R + 2 * N;  // D
  float* g = delta + D;            // D: y * silu(z)
  float* out = g + D;              // W

  matvec(w, x, s, W, d.F, h);
  w += padded(W) * d.F;
  s += W;
  for (int64_t l = 0; l < d.L; ++l) {
    const float *in_w = w, *x_w = in_w + padded(2 * D) * W, *dt_w = x_w + padded(R + 2 * N) * D,
            *out_w = dt_w + padded(D) * R;
    w = out_w + padded(W) * D;
    const float *norm_w = s, *conv_w = norm_w + W, *conv_b = conv_w + K * D, *dt_b = conv_b + D, *A = dt_b + D,
                *skip = A + D * N;
    s = skip + D;
    const float* s_in = state + l * D * row;
    float* s_out = next + l * D * row;
    // This layer's state rows and A come from L3 (the weights streamed since evicted them): ask for
    // them now, so they arrive while the in-projection runs.
    for (int64_t i = 0; i < D * row; i += 16) __builtin_prefetch(s_in + i, 1, 2);
    for (int64_t i = 0; i < D * N; i += 16) __builtin_prefetch(A + i, 0, 2);

    rms_norm(h, norm_w, W, eps, hn);
    matvec(in_w, hn, nullptr, 2 * D, W, uz);
    for (int64_t c = 0; c < D; ++c) {  // the depthwise causal conv over [last K-1 inputs, u]
      const float* window = s_in + c * row;
      float acc = conv_b[c] + conv_w[(K - 1) * D + c] * uz[c];
      for (int64_t k = 0; k < K - 1; ++k) acc += conv_w[k * D + c] * window[k];
      uc[c] = acc;
    }
    map(uc, D, silu);
    matvec(x_w, uc, nullptr, R + 2 * N, D, sel);
    matvec(dt_w, sel, dt_b, D, R, delta);
    map(delta, D, softplus);
    const float *B = sel + R, *C = sel + R + N;
    for (int64_t c = 0; c < D; ++c) {  // h <- exp(delta A) h + delta u B;  y = C . h + skip u
      const float* window = s_in + c * row;
      float* conv_out = s_out + c * row;
      const float dc = delta[c], du = dc * uc[c];
      const float* a = A + c * N;
      for (int64_t k = 0; k + 1 < K - 1; ++k) conv_out[k] = window[k + 1];
      if (K > 1) conv_out[K - 2] = uz[c];
      g[c] = ssm_update(a, window + K - 1, conv_out + K - 1, B, C, dc, du, N) + skip[c] * uc[c];
    }
    for (int64_t c = 0; c < D; c += kLanes) store(g + c, load(g + c, D - c) * silu(load(uz + D + c, D - c)), D - c);
    matvec(out_w, g, nullptr, W, D, out);
    for (int64_t j = 0; j < W; ++j) h[j] += out[j];
  }
  rms_norm(h, s, W, eps, hn);
  matvec(w, hn, s + W, d.O, W, y);
}

ffi::Error MambaStepImpl(ffi::Buffer<ffi::F32> weights, ffi::Buffer<ffi::F32> small, ffi::Buffer<ffi::F32> state,
                         ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> next,
                         int64_t width, int64_t layers, int64_t inner, int64_t state_size, int64_t conv_kernel,
                         int64_t rank, float eps) {
  const auto xd = x.dimensions(), yd = y->dimensions(), sd = state.dimensions();
  if (xd.size() < 1 || yd.size() != xd.size() || sd.size() != xd.size() + 2)
    return ffi::Error::InvalidArgument("mamba_step: x (..., F), y (..., O), state (..., L, D, K-1+N) expected");
  const Dims d{xd.back(), width, layers, inner, state_size, conv_kernel, rank, yd.back()};
  if (static_cast<int64_t>(weights.element_count()) != d.weights() ||
      static_cast<int64_t>(small.element_count()) != d.small())
    return ffi::Error::InvalidArgument("mamba_step: packed parameters do not match the dimensions");
  if (sd[sd.size() - 3] != d.L || sd[sd.size() - 2] != d.D || sd[sd.size() - 1] != d.row())
    return ffi::Error::InvalidArgument("mamba_step: state shape does not match the model");
  const int64_t cells = static_cast<int64_t>(x.element_count()) / d.F;
  const int64_t per_cell = d.L * d.D * d.row();
  if (static_cast<int64_t>(state.element_count()) != cells * per_cell ||
      static_cast<int64_t>(y->element_count()) != cells * d.O)
    return ffi::Error::InvalidArgument("mamba_step: one state per cell expected (vmap the state with the inputs)");
  std::vector<float> scratch(d.scratch());
  for (int64_t b = 0; b < cells; ++b)
    cell_step(d, weights.typed_data(), small.typed_data(), eps, x.typed_data() + b * d.F,
              state.typed_data() + b * per_cell, y->typed_data() + b * d.O, next->typed_data() + b * per_cell,
              scratch.data());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CellaxMambaStep, MambaStepImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // weights
                                  .Arg<ffi::Buffer<ffi::F32>>()  // small parameters
                                  .Arg<ffi::Buffer<ffi::F32>>()  // state
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .Ret<ffi::Buffer<ffi::F32>>()  // y
                                  .Ret<ffi::Buffer<ffi::F32>>()  // next state
                                  .Attr<int64_t>("width")
                                  .Attr<int64_t>("layers")
                                  .Attr<int64_t>("inner")
                                  .Attr<int64_t>("state_size")
                                  .Attr<int64_t>("conv_kernel")
                                  .Attr<int64_t>("rank")
                                  .Attr<float>("eps"));
