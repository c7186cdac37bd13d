/* Fused CPU kernels for the model's small shapes, where libtorch's composite ops cost more in per-call overhead and
 * passes over memory than in arithmetic (Util/FusedKernels.cs calls them; Qwen3RMSNorm and Qwen3Attention's RoPE use
 * them for float32).
 *  1. RMSNorm forward y = w * (x * r), r = 1/sqrt(mean(x^2) + eps), one pass per row instead of libtorch's six ops;
 *     the backward gx = r * (g - n * mean(g * n)) with g = gy * w and n = x * r, gw = sum over rows of gy * n.
 *  2. Sums run in a fixed order (8 running lanes, then a fixed tree) and products are never contracted into FMAs
 *     (-ffp-contract=off), so the bits do not depend on which instruction set the clone below runs with.
 *  3. target_clones: one build runs AVX-512 or AVX2 code where the CPU has it, SSE2 elsewhere; non-x86 builds get
 *     the plain loops, and so does -DWORKBOOK_NO_CLONES (FusedKernelsTests compares that build's bits).
 *  4. RoPE forward and backward in one pass each, with libtorch's roundings in libtorch's order: its bits equal the
 *     composite ops' (FusedRopeTests compares them), so it changes no result. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(WORKBOOK_NO_CLONES) && __GNUC__ >= 12
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(WORKBOOK_NO_CLONES)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default"))) /* gcc < 12 has no arch= levels */
#else
#define CLONES
#endif

#define LANES 8

/* sum of a[i] * b[i] in a fixed order */
static inline float dot(const float *a, const float *b, int64_t n) {
  float acc[LANES] = {0};
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (int j = 0; j < LANES; j++)
      acc[j] += a[i + j] * b[i + j];
  for (int j = 0; i < n; i++, j++)
    acc[j] += a[i] * b[i];
  for (int w = LANES / 2; w > 0; w /= 2)
    for (int j = 0; j < w; j++)
      acc[j] += acc[j + w];
  return acc[0];
}

/* Version of this file's functions and their numerics: the C# side refuses a library that answers otherwise. */
int workbook_fused_version(void) { return 3; }

/* x, y: rows x dim, contiguous; w: dim; rstd: rows (the saved 1/sqrt(mean(x^2) + eps)) or NULL */
CLONES
void workbook_rmsnorm_forward_f32(const float *x, const float *w, float *y, float *rstd, int64_t rows, int64_t dim,
                                  float eps) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * dim;
    float *yr = y + r * dim;
    float inv = 1.0f / sqrtf(dot(xr, xr, dim) / (float)dim + eps);
    if (rstd)
      rstd[r] = inv;
    for (int64_t i = 0; i < dim; i++)
      yr[i] = w[i] * (xr[i] * inv);
  }
}

/* gy, gx: rows x dim, contiguous; gw: dim (overwritten with the weight's gradient); scratch: dim floats; acc: dim
 * doubles. The weight's gradient sums over every row (9,216 for q_norm in a main-job SFT step), so it accumulates in
 * double, row after row (a fixed order), and is rounded once. */
CLONES
void workbook_rmsnorm_backward_f32(const float *x, const float *w, const float *rstd, const float *gy, float *gx,
                                   float *gw, float *scratch, double *acc, int64_t rows, int64_t dim) {
  memset(acc, 0, sizeof(double) * (size_t)dim);
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * dim, *gr = gy + r * dim;
    float *gxr = gx + r * dim;
    float inv = rstd[r];
    for (int64_t i = 0; i < dim; i++) {
      acc[i] += (double)gr[i] * (double)(xr[i] * inv);
      scratch[i] = gr[i] * w[i];
    }
    /* mean(g * n) = r * mean(g * x) */
    float m = dot(scratch, xr, dim) * inv / (float)dim;
    for (int64_t i = 0; i < dim; i++)
      gxr[i] = inv * (scratch[i] - (xr[i] * inv) * m);
  }
  for (int64_t i = 0; i < dim; i++)
    gw[i] = (float)acc[i];
}

/* RoPE (item 4 above): y = x * cos + roll(x, D/2) * sin_signed (Qwen3Attention.Rope: rotate-half with the sign
 * folded into sin_signed), one pass instead of a roll copy, two products and a sum; the backward is
 * gx = gy * cos + roll(gy * sin_signed, -D/2). Each product is rounded, then the sum, as libtorch's separate ops do
 * (no FMA; the backward's two terms commute exactly), so the bits are libtorch's. Where y goes is the caller's choice
 * (its strides): the attention asks for [B, H, T, D] contiguous queries, which its [B, KV, G*T, D] view then takes
 * without a copy. dims: B, H, T, D (D even); st: strides in elements of x (b, h, t), cos (b, t), sin_signed (b, t)
 * and y (b, h, t), each row of D contiguous; the backward reads gy with x's strides and writes gx with y's. */
/* Rows of either pass: y = x * c + partner(x) * s', partner swapping the row's halves. The forward's s' is sin_signed
 * (shift 0); the backward's is sin_signed with its halves swapped too (shift D/2), since
 * roll(gy * s, -D/2) = partner(gy) * partner(s). Inlined into each clone, so it runs with the clone's ISA. */
static inline __attribute__((always_inline)) void rope_rows(const float *x, const float *cs, const float *sn,
                                                            float *y, const int64_t *dims, const int64_t *st,
                                                            int64_t shift) {
  int64_t B = dims[0], H = dims[1], T = dims[2], half = dims[3] / 2;
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t t = 0; t < T; t++) {
        const float *restrict xr = x + b * st[0] + h * st[1] + t * st[2];
        const float *restrict c = cs + b * st[3] + t * st[4], *restrict s = sn + b * st[5] + t * st[6];
        float *restrict yr = y + b * st[7] + h * st[8] + t * st[9];
        for (int64_t d = 0; d < half; d++)
          yr[d] = xr[d] * c[d] + xr[d + half] * s[d + shift];
        for (int64_t d = half; d < 2 * half; d++)
          yr[d] = xr[d] * c[d] + xr[d - half] * s[d - shift];
      }
}

CLONES
void workbook_rope_forward_f32(const float *x, const float *cs, const float *sn, float *y, const int64_t *dims,
                               const int64_t *st) {
  rope_rows(x, cs, sn, y, dims, st, 0);
}

CLONES
void workbook_rope_backward_f32(const float *gy, const float *cs, const float *sn, float *gx, const int64_t *dims,
                                const int64_t *st) {
  rope_rows(gy, cs, sn, gx, dims, st, dims[3] / 2);
}
