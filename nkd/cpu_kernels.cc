// 2-D convolutions (NHWC input, HWIO kernel) on x86-64 CPUs with AVX2 and FMA, as XLA FFI
// handlers (nkd/cpu_kernels.py builds them; nkd/models/conv.py registers and calls them).
//
// NkdConv, the convolution:
//   y[n, p, q, o] = sum over (a, b, i) of
//                   x[n, p s + a - pad_top, q s + b - pad_left, i] w[a, b, i, o]
// NkdConvKernelGrad, its kernel gradient:
//   dW[a, b, i, o] = sum over (n, p, q) of
//                    x[n, p s + a - pad_top, q s + b - pad_left, i] g[n, p, q, o]
//
// x (N, H, W, I) is the layer's input, w (KH, KW, I, O) its kernel, y and g (N, P, Q, O) its output
// and the output's cotangent; taps outside x count as zeros (a negative pad crops). A stride-1
// 3x3 convolution with 8 or more input channels (a WRN's main layers, and their input gradients)
// takes Winograd's F(2x2, 3x3) algorithm: 16 multiplications per 2x2 outputs and channel pair
// instead of 36; its kernel gradient the transposed F(3x3, 2x2), 16 per 2x2 tile of g and channel
// pair. Other layers take the direct sum. On a 2-vCPU Zen 4 the convolution runs at the
// equivalent of 200-400 GFLOP/s of direct convolution on a WRN's 3x3 layers (XLA:CPU: 79-187),
// the kernel gradient at 230-300 on the stride-1 ones (direct: 150-210; XLA:CPU transposes both
// operands first: 24-180); BENCHMARKS.md.
//
// The bits do not depend on the CPU or on the thread count. The code fixes the order of every
// operation: a direct output element is one running sum of fused multiply-adds over (a, b, i); a
// Winograd output is a fixed sequence of additions of 16 such sums over i, each of transformed
// inputs and kernels, whose own additions and halvings are written out (-ffp-contract=off keeps
// the compiler from fusing them). FMA rounds once, so 8-lane AVX2 on any CPU gives what any
// other vector width would. dW (or Winograd's 16 products for it) is summed over the images,
// rows and columns (tiles) of each of min(N, 16) chunks of images (a function of the shape
// only), whose partial sums are then added in chunk order. Threads only decide who computes
// which part.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kMaxChunks = 16;

struct Dims {
  int64_t n, h, w, ci, p, q, co, kh, kw, stride, pad_top, pad_left;
};

// The output rows [lo, hi) whose tap `offset` (a or b) reads a row of x inside [0, size).
inline void ValidRange(int64_t out, int64_t stride, int64_t offset, int64_t size, int64_t* lo,
                       int64_t* hi) {
  *lo = 0;
  *hi = out;
  while (*lo < out && *lo * stride + offset < 0) ++*lo;
  while (*hi > *lo && (*hi - 1) * stride + offset >= size) --*hi;
}

// out[i][o] += sum over q < q_count, in order, of xr[q * stride * I + i] gr[q * O + o], for
// i < CI and o < 8 * OV (out's rows O floats apart). For the direct kernel gradient, a block of
// dW[a, b] and the pixels of output row p (xr and gr at its first); for Winograd's, a block of
// one product M[k] and a block of tiles (`stride` 1: the transformed rows lie I floats apart).
// The block lives in CI x OV registers for the row (12 of AVX2's 16 at most).
template <int CI, int OV>
inline void Block(const Dims& d, const float* xr, const float* gr, float* out, int64_t q_count) {
  const int64_t x_step = d.stride * d.ci;
  __m256 acc[CI][OV];
#pragma GCC unroll 6
  for (int i = 0; i < CI; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < OV; ++j) acc[i][j] = _mm256_loadu_ps(out + i * d.co + 8 * j);
  for (int64_t q = 0; q < q_count; ++q, xr += x_step, gr += d.co) {
    __m256 gv[OV];
#pragma GCC unroll 2
    for (int j = 0; j < OV; ++j) gv[j] = _mm256_loadu_ps(gr + 8 * j);
#pragma GCC unroll 6
    for (int i = 0; i < CI; ++i) {
      const __m256 xv = _mm256_broadcast_ss(xr + i);
#pragma GCC unroll 2
      for (int j = 0; j < OV; ++j) acc[i][j] = _mm256_fmadd_ps(xv, gv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < CI; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < OV; ++j) _mm256_storeu_ps(out + i * d.co + 8 * j, acc[i][j]);
}

// All input channels of one tap, one output row and one block of 8 * OV output channels, six
// at a time.
template <int OV>
void InputChannels(const Dims& d, const float* xr, const float* gr, float* out, int64_t q_count) {
  int64_t i0 = 0;
  for (; i0 + 6 <= d.ci; i0 += 6) Block<6, OV>(d, xr + i0, gr, out + i0 * d.co, q_count);
  const float* x = xr + i0;
  float* o = out + i0 * d.co;
  switch (d.ci - i0) {
    case 5: Block<5, OV>(d, x, gr, o, q_count); break;
    case 4: Block<4, OV>(d, x, gr, o, q_count); break;
    case 3: Block<3, OV>(d, x, gr, o, q_count); break;
    case 2: Block<2, OV>(d, x, gr, o, q_count); break;
    case 1: Block<1, OV>(d, x, gr, o, q_count); break;
    default: break;
  }
}

// The partial dW of images [first, last), written to dw. Each element is one running sum over
// the images, then the output rows, then the columns, in order; a tap's output row is done for
// every channel block before the next, so its rows of x and g stay in the L1 cache.
void Chunk(const Dims& d, const float* x, const float* g, float* dw, int64_t first, int64_t last) {
  std::memset(dw, 0, sizeof(float) * d.kh * d.kw * d.ci * d.co);
  for (int64_t n = first; n < last; ++n) {
    const float* xn = x + n * d.h * d.w * d.ci;
    const float* gn = g + n * d.p * d.q * d.co;
    for (int64_t a = 0; a < d.kh; ++a) {
      int64_t p_lo, p_hi;
      ValidRange(d.p, d.stride, a - d.pad_top, d.h, &p_lo, &p_hi);
      for (int64_t b = 0; b < d.kw; ++b) {
        int64_t q_lo, q_hi;
        ValidRange(d.q, d.stride, b - d.pad_left, d.w, &q_lo, &q_hi);
        if (q_lo >= q_hi) continue;
        float* tap = dw + (a * d.kw + b) * d.ci * d.co;
        for (int64_t p = p_lo; p < p_hi; ++p) {
          const float* xr =
              xn + ((p * d.stride + a - d.pad_top) * d.w + q_lo * d.stride + b - d.pad_left) * d.ci;
          const float* gr = gn + (p * d.q + q_lo) * d.co;
          int64_t o0 = 0;
          for (; o0 + 16 <= d.co; o0 += 16)
            InputChannels<2>(d, xr, gr + o0, tap + o0, q_hi - q_lo);
          if (o0 < d.co) InputChannels<1>(d, xr, gr + o0, tap + o0, q_hi - q_lo);
        }
      }
    }
  }
}

// Tasks handed out to the caller and the pool's threads; the caller waits for all to finish.
struct Progress {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> finished{0};
  std::mutex mu;
  std::condition_variable all_done;
};

// Runs work(t) for t in [0, tasks) on the caller and the pool's threads; returns when all are done.
template <typename Work>
void Parallel(ffi::ThreadPool& pool, int64_t tasks, Work work) {
  auto progress = std::make_shared<Progress>();
  auto run = [progress, tasks, work]() {
    for (int64_t t; (t = progress->next.fetch_add(1)) < tasks;) {
      work(t);
      if (progress->finished.fetch_add(1) + 1 == tasks) {
        std::lock_guard<std::mutex> lock(progress->mu);
        progress->all_done.notify_all();
      }
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), tasks - 1);
  for (int64_t t = 0; t < helpers; ++t) {
    auto task = run;
    pool.Schedule(std::move(task));
  }
  run();
  std::unique_lock<std::mutex> lock(progress->mu);
  progress->all_done.wait(lock, [&] { return progress->finished.load() == tasks; });
}

// The layer's sizes from x (N,H,W,I), a kernel-shaped (KH,KW,I,O) and an output-shaped
// (N,P,Q,O) buffer; an error naming `handler` where they do not fit together.
template <typename Span>
ffi::Error LayerDims(const char* handler, Span x, Span kernel, Span out, int64_t stride,
                     int64_t pad_top, int64_t pad_left, Dims* d) {
  if (x.size() != 4 || kernel.size() != 4 || out.size() != 4 || out[0] != x[0] ||
      kernel[2] != x[3] || kernel[3] != out[3] || out[3] % 8 != 0 || stride < 1)
    return ffi::Error::InvalidArgument(
        std::string(handler) +
        ": expected x (N,H,W,I), a kernel (KH,KW,I,O) and an output (N,P,Q,O) with O % 8 == 0");
  *d = Dims{x[0], x[1], x[2], x[3], out[1], out[2], out[3],
            kernel[0], kernel[1], stride, pad_top, pad_left};
  return ffi::Error::Success();
}

// y[n, pixels pix0 .. pix0+QT of the image (row-major over P x Q), o0 .. o0+8*OV]. The tile lives
// in QT x OV registers through the input channels of a tap; taps outside x read zeros.
template <int QT, int OV>
inline void OutputTile(const Dims& d, const float* x, const float* w, float* y, const float* zeros,
                       int64_t n, int64_t pix0, int64_t o0) {
  float* out = y + (n * d.p * d.q + pix0) * d.co + o0;
  for (int j = 0; j < QT; ++j)
    for (int k = 0; k < OV; ++k) _mm256_storeu_ps(out + j * d.co + 8 * k, _mm256_setzero_ps());
  int64_t row0[QT], col0[QT];
  for (int j = 0; j < QT; ++j) {
    row0[j] = (pix0 + j) / d.q * d.stride - d.pad_top;
    col0[j] = (pix0 + j) % d.q * d.stride - d.pad_left;
  }
  const float* xn = x + n * d.h * d.w * d.ci;
  for (int64_t a = 0; a < d.kh; ++a) {
    for (int64_t b = 0; b < d.kw; ++b) {
      const float* xp[QT];
      bool any = false;
      for (int j = 0; j < QT; ++j) {
        const int64_t row = row0[j] + a, col = col0[j] + b;
        const bool inside = row >= 0 && row < d.h && col >= 0 && col < d.w;
        xp[j] = inside ? xn + (row * d.w + col) * d.ci : zeros;
        any |= inside;
      }
      if (!any) continue;
      const float* wp = w + (a * d.kw + b) * d.ci * d.co + o0;
      __m256 acc[QT][OV];
      for (int j = 0; j < QT; ++j)
        for (int k = 0; k < OV; ++k) acc[j][k] = _mm256_loadu_ps(out + j * d.co + 8 * k);
      for (int64_t i = 0; i < d.ci; ++i, wp += d.co) {
        __m256 wv[OV];
        for (int k = 0; k < OV; ++k) wv[k] = _mm256_loadu_ps(wp + 8 * k);
        for (int j = 0; j < QT; ++j) {
          const __m256 xv = _mm256_broadcast_ss(xp[j] + i);
          for (int k = 0; k < OV; ++k) acc[j][k] = _mm256_fmadd_ps(xv, wv[k], acc[j][k]);
        }
      }
      for (int j = 0; j < QT; ++j)
        for (int k = 0; k < OV; ++k) _mm256_storeu_ps(out + j * d.co + 8 * k, acc[j][k]);
    }
  }
}

// Output pixels [lo, hi) of image n, three at a time, for output channels o0 .. o0+8*OV.
template <int OV>
void OutputPixels(const Dims& d, const float* x, const float* w, float* y, const float* zeros,
                  int64_t n, int64_t lo, int64_t hi, int64_t o0) {
  int64_t pix = lo;
  for (; pix + 3 <= hi; pix += 3) OutputTile<3, OV>(d, x, w, y, zeros, n, pix, o0);
  for (; pix < hi; ++pix) OutputTile<1, OV>(d, x, w, y, zeros, n, pix, o0);
}

// Winograd F(2x2, 3x3) (Lavin and Gray, 2016) for stride-1 3x3 layers: each 2x2 block of
// outputs ("tile") of one image is A^T [(G w G^T) . (B^T d B)] A, d the tile's 4x4 input patch,
// so the 36 multiplications of a tile and channel pair become 16, done as 16 matrix products
// M[k] = V[k] U[k] over the input channels (V: the transformed patches, tiles x I; U: the
// transformed kernel, I x O). The transforms are additions and halvings written out below in a
// fixed order (-ffp-contract=off keeps them apart); each product is a running FMA sum over the
// input channels in order. Tiles are grouped into blocks for the cache, a block per task: a
// tile's result does not depend on its block or thread.
namespace winograd {

// U[k = 4 r + c][i][o] = (G w[., ., i, o] G^T)[r][c], G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2;
// 0 0 1].
void TransformKernel(const Dims& d, const float* w, float* u) {
  const int64_t io = d.ci * d.co;
  for (int64_t e = 0; e < io; ++e) {
    float g[3][3], t[4][3];
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b) g[a][b] = w[(a * 3 + b) * io + e];
    for (int b = 0; b < 3; ++b) {
      t[0][b] = g[0][b];
      t[1][b] = (g[0][b] + g[1][b] + g[2][b]) * 0.5f;
      t[2][b] = (g[0][b] - g[1][b] + g[2][b]) * 0.5f;
      t[3][b] = g[2][b];
    }
    for (int r = 0; r < 4; ++r) {
      u[(4 * r + 0) * io + e] = t[r][0];
      u[(4 * r + 1) * io + e] = (t[r][0] + t[r][1] + t[r][2]) * 0.5f;
      u[(4 * r + 2) * io + e] = (t[r][0] - t[r][1] + t[r][2]) * 0.5f;
      u[(4 * r + 3) * io + e] = t[r][2];
    }
  }
}

// v[4 r + c] = (B^T d B)[r][c], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], for floats or
// AVX2 vectors of 8 channels.
template <typename T>
inline void TransformPatch(const T (&p)[4][4], T (&v)[16]) {
  T t[4][4];
  for (int c = 0; c < 4; ++c) {
    t[0][c] = p[0][c] - p[2][c];
    t[1][c] = p[1][c] + p[2][c];
    t[2][c] = p[2][c] - p[1][c];
    t[3][c] = p[1][c] - p[3][c];
  }
  for (int r = 0; r < 4; ++r) {
    v[4 * r + 0] = t[r][0] - t[r][2];
    v[4 * r + 1] = t[r][1] + t[r][2];
    v[4 * r + 2] = t[r][2] - t[r][1];
    v[4 * r + 3] = t[r][1] - t[r][3];
  }
}

struct Layout {
  int64_t tiles_h, tiles_w, tiles;  // tiles per column and row of an image, in all
  int64_t block;                    // tiles per task
};

// The transformed patches of tiles [t0, t0 + count) into v[k][tile - t0][i], v[k] at
// v + k * k_stride.
void TransformInput(const Dims& d, const Layout& l, const float* x, const float* zeros,
                    int64_t t0, int64_t count, int64_t k_stride, float* v) {
  const int64_t per_image = l.tiles_h * l.tiles_w;
  for (int64_t j = 0; j < count; ++j) {
    const int64_t t = t0 + j, n = t / per_image;
    const int64_t row0 = (t % per_image) / l.tiles_w * 2 - d.pad_top;
    const int64_t col0 = (t % per_image) % l.tiles_w * 2 - d.pad_left;
    const float* xn = x + n * d.h * d.w * d.ci;
    const float* src[4][4];
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) {
        const int64_t row = row0 + r, col = col0 + c;
        src[r][c] = row >= 0 && row < d.h && col >= 0 && col < d.w ? xn + (row * d.w + col) * d.ci
                                                                   : zeros;
      }
    float* out = v + j * d.ci;
    int64_t i = 0;
    for (; i + 8 <= d.ci; i += 8) {
      __m256 p[4][4], q[16];
      for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) p[r][c] = _mm256_loadu_ps(src[r][c] + i);
      TransformPatch(p, q);
      for (int k = 0; k < 16; ++k) _mm256_storeu_ps(out + k * k_stride + i, q[k]);
    }
    for (; i < d.ci; ++i) {
      float p[4][4], q[16];
      for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) p[r][c] = src[r][c][i];
      TransformPatch(p, q);
      for (int k = 0; k < 16; ++k) out[k * k_stride + i] = q[k];
    }
  }
}

// m[RT rows][8 OV channels] = v[RT rows][I] u[I][8 OV channels]: FMAs over i in order.
template <int RT, int OV>
inline void Product(const float* v, const float* u, float* m, int64_t ci, int64_t co) {
  __m256 acc[RT][OV];
#pragma GCC unroll 16
  for (int j = 0; j < RT; ++j)
#pragma GCC unroll 16
    for (int k = 0; k < OV; ++k) acc[j][k] = _mm256_setzero_ps();
  for (int64_t i = 0; i < ci; ++i, u += co) {
    __m256 uv[OV];
#pragma GCC unroll 16
    for (int k = 0; k < OV; ++k) uv[k] = _mm256_loadu_ps(u + 8 * k);
#pragma GCC unroll 16
    for (int j = 0; j < RT; ++j) {
      const __m256 xv = _mm256_broadcast_ss(v + j * ci + i);
#pragma GCC unroll 16
      for (int k = 0; k < OV; ++k) acc[j][k] = _mm256_fmadd_ps(xv, uv[k], acc[j][k]);
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < RT; ++j)
#pragma GCC unroll 16
    for (int k = 0; k < OV; ++k) _mm256_storeu_ps(m + j * co + 8 * k, acc[j][k]);
}

// Rows of one product, RT at a time, for channels o0 .. o0 + 8 OV.
template <int RT, int OV>
void ProductRows(const float* v, const float* u, float* m, int64_t rows, int64_t ci, int64_t co) {
  int64_t j = 0;
  for (; j + RT <= rows; j += RT) Product<RT, OV>(v + j * ci, u, m + j * co, ci, co);
  for (; j < rows; ++j) Product<1, OV>(v + j * ci, u, m + j * co, ci, co);
}

// y of tiles [t0, t0 + count) from m[k][tile - t0][o], m[k] at m + k * k_stride: A^T m A,
// A^T = [1 1 1 0; 0 1 -1 -1], the outputs past the layer's last row or column left out.
void TransformOutput(const Dims& d, const Layout& l, const float* m, int64_t t0, int64_t count,
                     int64_t k_stride, float* y) {
  const int64_t per_image = l.tiles_h * l.tiles_w;
  for (int64_t j = 0; j < count; ++j) {
    const int64_t t = t0 + j, n = t / per_image;
    const int64_t row0 = (t % per_image) / l.tiles_w * 2, col0 = (t % per_image) % l.tiles_w * 2;
    const bool row1 = row0 + 1 < d.p, col1 = col0 + 1 < d.q;
    float* out = y + ((n * d.p + row0) * d.q + col0) * d.co;
    const float* in = m + j * d.co;
    for (int64_t o = 0; o < d.co; o += 8) {
      __m256 s[16], t2[2][4];
      for (int k = 0; k < 16; ++k) s[k] = _mm256_loadu_ps(in + k * k_stride + o);
      for (int c = 0; c < 4; ++c) {
        t2[0][c] = s[c] + s[4 + c] + s[8 + c];
        t2[1][c] = s[4 + c] - s[8 + c] - s[12 + c];
      }
      for (int r = 0; r < 2; ++r) {
        if (r == 1 && !row1) break;
        float* dst = out + r * d.q * d.co + o;
        _mm256_storeu_ps(dst, t2[r][0] + t2[r][1] + t2[r][2]);
        if (col1) _mm256_storeu_ps(dst + d.co, t2[r][1] - t2[r][2] - t2[r][3]);
      }
    }
  }
}

// At least `floats` floats kept by the calling thread between calls; each `Use` its own buffer.
template <int Use>
float* ThreadBuffer(size_t floats) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < floats) buffer.resize(floats);
  return buffer.data();
}

// Scratch space for a task's transformed patches and products.
float* Scratch(size_t floats) { return ThreadBuffer<0>(floats); }

void Conv(ffi::ThreadPool& pool, const Dims& d, const float* x, const float* w, float* y) {
  Layout l;
  l.tiles_h = (d.p + 1) / 2;
  l.tiles_w = (d.q + 1) / 2;
  l.tiles = d.n * l.tiles_h * l.tiles_w;
  // About 192 KiB of patches and products per block (they stay in L2), 6 to 60 tiles.
  l.block = std::max<int64_t>(6, std::min<int64_t>(60, 3072 / (d.ci + d.co)) / 6 * 6);
  std::vector<float> u(16 * d.ci * d.co);
  TransformKernel(d, w, u.data());
  const std::vector<float> zeros(static_cast<size_t>(d.ci), 0.0f);
  const float* up = u.data();
  const float* zp = zeros.data();
  const int64_t tasks = (l.tiles + l.block - 1) / l.block;
  Parallel(pool, tasks, [=](int64_t task) {
    const int64_t t0 = task * l.block, count = std::min(l.block, l.tiles - t0);
    // The 16 patches' and products' rows lie a cache line more than a block apart (see
    // KernelGrad).
    const int64_t v_stride = l.block * d.ci + 16, m_stride = l.block * d.co + 16;
    float* v = Scratch(16 * (v_stride + m_stride));
    float* m = v + 16 * v_stride;
    TransformInput(d, l, x, zp, t0, count, v_stride, v);
    for (int k = 0; k < 16; ++k) {
      const float* vk = v + k * v_stride;
      const float* uk = up + k * d.ci * d.co;
      float* mk = m + k * m_stride;
      int64_t o0 = 0;
      for (; o0 + 32 <= d.co; o0 += 32)
        ProductRows<3, 4>(vk, uk + o0, mk + o0, count, d.ci, d.co);
      if (o0 + 16 <= d.co) ProductRows<6, 2>(vk, uk + o0, mk + o0, count, d.ci, d.co), o0 += 16;
      if (o0 < d.co) ProductRows<6, 1>(vk, uk + o0, mk + o0, count, d.ci, d.co);
    }
    TransformOutput(d, l, m, t0, count, m_stride, y);
  });
}


// The kernel gradient of a stride-1 3x3 layer by Winograd's F(3x3, 2x2), the same algorithm
// transposed: for each 2x2 tile of the output's cotangent g and the 4x4 input patch d under it,
// the tile's share of dW[., ., i, o] (3x3) is G^T [(A g A^T) . (B^T d B)] G, with B^T and G
// as above and A = [1 0; 1 1; 1 -1; 0 -1]. The 16 products are summed over the tiles first,
// M[k][i][o] = sum over tiles of V[k][tile][i] T[k][tile][o] (T: the transformed cotangent),
// and G^T M G taken once at the end: 16 multiplications per tile and channel pair instead of 36.

// T[k][tile - t0][o] = (A g A^T)[r][c], k = 4 r + c, of tiles [t0, t0 + count), T[k] at
// out + k * k_stride; the cotangent's rows and columns past the layer's last count as zeros.
void TransformGradient(const Dims& d, const Layout& l, const float* g, const float* zeros,
                       int64_t t0, int64_t count, int64_t k_stride, float* out) {
  const int64_t per_image = l.tiles_h * l.tiles_w;
  for (int64_t j = 0; j < count; ++j) {
    const int64_t t = t0 + j, n = t / per_image;
    const int64_t row0 = (t % per_image) / l.tiles_w * 2, col0 = (t % per_image) % l.tiles_w * 2;
    const float* src[2][2];
    for (int u = 0; u < 2; ++u)
      for (int v = 0; v < 2; ++v)
        src[u][v] = row0 + u < d.p && col0 + v < d.q
                        ? g + ((n * d.p + row0 + u) * d.q + col0 + v) * d.co
                        : zeros;
    float* dst = out + j * d.co;
    for (int64_t o = 0; o < d.co; o += 8) {
      __m256 p[2][2], a[4][2];
      for (int u = 0; u < 2; ++u)
        for (int v = 0; v < 2; ++v) p[u][v] = _mm256_loadu_ps(src[u][v] + o);
      for (int v = 0; v < 2; ++v) {
        a[0][v] = p[0][v];
        a[1][v] = p[0][v] + p[1][v];
        a[2][v] = p[0][v] - p[1][v];
        a[3][v] = -p[1][v];
      }
      for (int r = 0; r < 4; ++r) {
        _mm256_storeu_ps(dst + (4 * r + 0) * k_stride + o, a[r][0]);
        _mm256_storeu_ps(dst + (4 * r + 1) * k_stride + o, a[r][0] + a[r][1]);
        _mm256_storeu_ps(dst + (4 * r + 2) * k_stride + o, a[r][0] - a[r][1]);
        _mm256_storeu_ps(dst + (4 * r + 3) * k_stride + o, -a[r][1]);
      }
    }
  }
}

// dW[a][b][e] = (G^T M[.][e] G)[a][b] for the io = I x O channel pairs e in [lo, hi).
void TransformKernelGradient(const float* m, int64_t io, int64_t lo, int64_t hi, float* dw) {
  for (int64_t e = lo; e < hi; ++e) {
    float t[4][3];
    for (int r = 0; r < 4; ++r) {
      const float m0 = m[(4 * r) * io + e], m1 = m[(4 * r + 1) * io + e];
      const float m2 = m[(4 * r + 2) * io + e], m3 = m[(4 * r + 3) * io + e];
      t[r][0] = m0 + (m1 + m2) * 0.5f;
      t[r][1] = (m1 - m2) * 0.5f;
      t[r][2] = (m1 + m2) * 0.5f + m3;
    }
    for (int b = 0; b < 3; ++b) {
      dw[(0 * 3 + b) * io + e] = t[0][b] + (t[1][b] + t[2][b]) * 0.5f;
      dw[(1 * 3 + b) * io + e] = (t[1][b] - t[2][b]) * 0.5f;
      dw[(2 * 3 + b) * io + e] = (t[1][b] + t[2][b]) * 0.5f + t[3][b];
    }
  }
}

// Room for the products' partial sums of every chunk of images: up to 64 MiB kept by the calling
// thread between calls (a WRN-16-2's largest layer needs 16 MiB), more allocated for this call in
// `owned` (a wide network's, 16 x 16 x I x O floats, would otherwise stay held per thread).
float* ChunkSums(size_t floats, std::unique_ptr<float[]>* owned) {
  constexpr size_t kKeptFloats = size_t{16} << 20;
  if (floats > kKeptFloats) {
    owned->reset(new float[floats]);
    return owned->get();
  }
  // Not Scratch's buffer: the calling thread also runs tasks, which use theirs meanwhile.
  return ThreadBuffer<1>(floats);
}

// dW of a stride-1 3x3 layer. Chunk c of images sums its tiles' products into its own M_c, each
// element one running FMA sum over the chunk's tiles in order (images, tile rows, tile
// columns); the chunks' M_c are then added in chunk order, and G^T M G taken.
void KernelGrad(ffi::ThreadPool& pool, const Dims& d, const float* x, const float* g,
                float* dw) {
  Layout l;
  l.tiles_h = (d.p + 1) / 2;
  l.tiles_w = (d.q + 1) / 2;
  l.tiles = d.n * l.tiles_h * l.tiles_w;
  // Blocks of 64 tiles (fewer where I + O > 256: a product's operands, block x (I + O) floats,
  // at most 64 KiB): each block reads and writes all of M, so longer blocks are faster until
  // the operands spill out of the L2 cache.
  l.block = std::max<int64_t>(8, std::min<int64_t>(64, 16384 / (d.ci + d.co)));
  const int64_t per_image = l.tiles_h * l.tiles_w, io = d.ci * d.co, size = 16 * io;
  const int64_t chunks = std::min(d.n, kMaxChunks);
  std::unique_ptr<float[]> owned;
  float* sums = ChunkSums(chunks * size, &owned);
  const std::vector<float> zeros(static_cast<size_t>(std::max(d.ci, d.co)), 0.0f);
  const float* zp = zeros.data();
  Dims rows = d;  // the products' operands: rows of I (patches) and of O (cotangents) floats
  rows.stride = 1;
  Parallel(pool, chunks, [=](int64_t c) {
    float* mc = sums + c * size;
    std::memset(mc, 0, sizeof(float) * size);
    const int64_t first = c * d.n / chunks * per_image, last = (c + 1) * d.n / chunks * per_image;
    // The 16 products' operands lie a cache line more than a block apart: at a multiple of
    // 4 KiB (a block of 64 tiles x 32 channels is 8 KiB), the transforms' 16 streams of stores
    // would share L1 cache sets.
    const int64_t v_stride = l.block * d.ci + 16, g_stride = l.block * d.co + 16;
    float* v = Scratch(16 * (v_stride + g_stride));
    float* gt = v + 16 * v_stride;
    for (int64_t t0 = first; t0 < last; t0 += l.block) {
      const int64_t count = std::min(l.block, last - t0);
      TransformInput(d, l, x, zp, t0, count, v_stride, v);
      TransformGradient(d, l, g, zp, t0, count, g_stride, gt);
      for (int k = 0; k < 16; ++k) {
        const float* vk = v + k * v_stride;
        const float* gk = gt + k * g_stride;
        float* mk = mc + k * io;
        int64_t o0 = 0;
        for (; o0 + 16 <= d.co; o0 += 16) InputChannels<2>(rows, vk, gk + o0, mk + o0, count);
        if (o0 < d.co) InputChannels<1>(rows, vk, gk + o0, mk + o0, count);
      }
    }
  });
  // Sum the chunks in order and transform, in parallel over the channel pairs.
  constexpr int64_t kPairsPerTask = 1024;
  Parallel(pool, (io + kPairsPerTask - 1) / kPairsPerTask, [=](int64_t task) {
    const int64_t lo = task * kPairsPerTask, hi = std::min(io, lo + kPairsPerTask);
    for (int64_t c = 1; c < chunks; ++c)
      for (int k = 0; k < 16; ++k) {
        float* m0 = sums + k * io;
        const float* mc = sums + c * size + k * io;
        for (int64_t e = lo; e < hi; ++e) m0[e] += mc[e];
      }
    TransformKernelGradient(sums, io, lo, hi, dw);
  });
}

}  // namespace winograd

// Whether the convolution takes Winograd's algorithm: a stride-1 3x3 layer with 8 or more input
// channels (fewer leave its products too short to gain; a function of the shape alone).
bool UsesWinograd(const Dims& d) {
  return d.kh == 3 && d.kw == 3 && d.stride == 1 && d.ci >= 8;
}

ffi::Error ConvKernelGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                          ffi::ResultBuffer<ffi::F32> dw, int64_t stride, int64_t pad_top,
                          int64_t pad_left) {
  Dims d;
  ffi::Error bad = LayerDims("nkd_conv_kernel_grad", x.dimensions(), dw->dimensions(),
                             g.dimensions(), stride, pad_top, pad_left, &d);
  if (bad.failure()) return bad;
  const int64_t size = d.kh * d.kw * d.ci * d.co;
  float* result = dw->typed_data();
  if (d.n == 0) {
    std::memset(result, 0, sizeof(float) * size);
    return ffi::Error::Success();
  }
  if (UsesWinograd(d)) {
    winograd::KernelGrad(pool, d, x.typed_data(), g.typed_data(), result);
    return ffi::Error::Success();
  }
  const int64_t chunks = std::min(d.n, kMaxChunks);
  // Chunk 0 is summed straight into the result, the others into their own buffers (Chunk
  // zeroes each before summing, so they are left uninitialised here).
  std::unique_ptr<float[]> partial(new float[(chunks - 1) * size]);
  const float* xp = x.typed_data();
  const float* gp = g.typed_data();
  float* pp = partial.get();
  Parallel(pool, chunks, [=](int64_t c) {
    float* out = c == 0 ? result : pp + (c - 1) * size;
    Chunk(d, xp, gp, out, c * d.n / chunks, (c + 1) * d.n / chunks);
  });
  for (int64_t c = 1; c < chunks; ++c) {
    const float* p = pp + (c - 1) * size;
    for (int64_t k = 0; k < size; ++k) result[k] += p[k];
  }
  return ffi::Error::Success();
}

ffi::Error Conv(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t pad_top, int64_t pad_left) {
  Dims d;
  ffi::Error bad = LayerDims("nkd_conv", x.dimensions(), w.dimensions(), y->dimensions(), stride,
                             pad_top, pad_left, &d);
  if (bad.failure()) return bad;
  const int64_t pixels = d.p * d.q;
  if (d.n == 0 || pixels == 0) return ffi::Error::Success();
  if (UsesWinograd(d)) {
    winograd::Conv(pool, d, x.typed_data(), w.typed_data(), y->typed_data());
    return ffi::Error::Success();
  }
  constexpr int64_t kPixelsPerTask = 64;
  const int64_t per_image = (pixels + kPixelsPerTask - 1) / kPixelsPerTask;
  const std::vector<float> zeros(static_cast<size_t>(d.ci), 0.0f);
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* yp = y->typed_data();
  const float* zp = zeros.data();
  Parallel(pool, d.n * per_image, [=](int64_t t) {
    const int64_t n = t / per_image, lo = t % per_image * kPixelsPerTask;
    const int64_t hi = std::min(pixels, lo + kPixelsPerTask);
    int64_t o0 = 0;
    for (; o0 + 32 <= d.co; o0 += 32) OutputPixels<4>(d, xp, wp, yp, zp, n, lo, hi, o0);
    if (o0 + 16 <= d.co) OutputPixels<2>(d, xp, wp, yp, zp, n, lo, hi, o0), o0 += 16;
    if (o0 < d.co) OutputPixels<1>(d, xp, wp, yp, zp, n, lo, hi, o0);
  });
  return ffi::Error::Success();
}

// Both handlers' arguments: the thread pool, the layer's input, a second array (the kernel, or the
// output's cotangent), the result, and the convolution's stride and low paddings.
auto LayerBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<int64_t>("stride")
      .Attr<int64_t>("pad_top")
      .Attr<int64_t>("pad_left");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(NkdConv, Conv, LayerBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(NkdConvKernelGrad, ConvKernelGrad, LayerBinding());
