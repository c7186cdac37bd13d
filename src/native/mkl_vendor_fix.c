/* oneMKL (linked statically into libtorch_cpu.so) asks this exported function whether the CPU is an Intel one and,
 * when it says no, takes slow generic code paths on AMD CPUs that have the same AVX-512 units (2048^2 f32 GEMM at
 * ~225 instead of ~520 GFLOP/s on an EPYC). libtorch_cpu.so calls it through its PLT, so this definition, loaded
 * with RTLD_GLOBAL before the first GEMM, is the one it binds to. MKL still picks kernels from the CPUID feature
 * bits, so a CPU without AVX-512 gets the kernels it can run.
 *  1. MKL asks once, at its first call that needs the CPU kind, and keeps the answer for the process (measured: a
 *     later change of the answer has no effect). So the workbook decides before the first GEMM.
 *  2. Unless workbook_mklfix_force_if_unasked came first, the answer is MKL's own (its definition inside
 *     libtorch_cpu.so), so a process that loads this library but never forces it computes exactly as without it.
 *  3. The answer is fixed once given, and workbook_mklfix_first_answer says what it is (-1: not decided yet);
 *     workbook_mklfix_asked says whether MKL has asked this library (a late load may have let it ask its own).
 * The workbook loads this library at startup (Util/NativeSetup.cs) and forces it on for an AMD CPU by default or for
 * any CPU with WORKBOOK_MKL_VENDOR_FIX=1; WORKBOOK_MKL_VENDOR_FIX=0 does not load it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

/* MKL's answer, fixed once given (-1: not asked yet); one compare-and-swap decides between MKL's first question and
 * workbook_mklfix_force_if_unasked, so MKL never hears two answers */
static int answer = -1;
static int asked = 0;

int mkl_serv_intel_cpu_true(void);

/* MKL's own answer: its definition in libtorch_cpu.so (a handle's dlsym searches that object first), or, if that
 * cannot be found, whether the CPU's vendor string is Intel's. */
static int mkl_own_answer(void) {
  void *h = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
  if (h) {
    int (*own)(void) = (int (*)(void))dlsym(h, "mkl_serv_intel_cpu_true");
    dlclose(h);
    if (own && own != mkl_serv_intel_cpu_true)
      return own();
  }
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  char v[13] = {0};
  if (!__get_cpuid(0, &a, &b, &c, &d))
    return 0;
  memcpy(v, &b, 4);
  memcpy(v + 4, &d, 4);
  memcpy(v + 8, &c, 4);
  return strcmp(v, "GenuineIntel") == 0;
#else
  return 0;
#endif
}

int mkl_serv_intel_cpu_true(void) {
  __atomic_store_n(&asked, 1, __ATOMIC_SEQ_CST);
  int r = __atomic_load_n(&answer, __ATOMIC_SEQ_CST);
  if (r >= 0)
    return r;
  int own = mkl_own_answer(), unasked = -1;
  if (__atomic_compare_exchange_n(&answer, &unasked, own, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
    return own;
  return unasked; /* another thread (or the workbook) decided first */
}

/* Yes from now on, if MKL has not asked yet: returns 1 if it took, 0 if MKL already had its answer. */
int workbook_mklfix_force_if_unasked(void) {
  int unasked = -1;
  return __atomic_compare_exchange_n(&answer, &unasked, 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* The answer MKL has or will get: 1 yes, 0 no, -1 not decided yet. */
int workbook_mklfix_first_answer(void) { return __atomic_load_n(&answer, __ATOMIC_SEQ_CST); }

/* Whether MKL has called this library's definition (1) or not yet (0). */
int workbook_mklfix_asked(void) { return __atomic_load_n(&asked, __ATOMIC_SEQ_CST); }
