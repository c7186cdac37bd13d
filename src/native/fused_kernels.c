/* Fused CPU kernels for the model's small shapes, where libtorch's composite ops cost more in per-call overhead and
 * passes over memory than in arithmetic (Util/FusedKernels.cs calls them; Qwen3RMSNorm uses them for float32).
 *  1. RMSNorm forward y = w * (x * r), r = 1/sqrt(mean(x^2) + eps), one pass per row instead of libtorch's six ops;
 *     the backward gx = r * (g - n * mean(g * n)) with g = gy * w and n = x * r, gw = sum over rows of gy * n.
 *  2. Sums run in a fixed order (8 running lanes, then a fixed tree) and products are never contracted into FMAs
 *     (-ffp-contract=off), so the bits do not depend on which instruction set the clone below runs with.
 *  3. target_clones: one build runs AVX-512 or AVX2 code where the CPU has it, SSE2 elsewhere; non-x86 builds get
 *     the plain loops, and so does -DWORKBOOK_NO_CLONES (FusedKernelsTests compares that build's bits). */
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
int workbook_fused_version(void) { return 2; }

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
