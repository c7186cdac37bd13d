/* oneMKL (linked statically into libtorch_cpu.so) asks this exported function whether the CPU is an Intel one and,
 * when it says no, takes slow generic code paths on AMD CPUs that have the same AVX-512 units (2048^2 f32 GEMM at
 * ~225 instead of ~520 GFLOP/s on an EPYC). libtorch_cpu.so calls it through its PLT, so this definition, loaded
 * with RTLD_GLOBAL before the first GEMM, is the one it binds to. MKL still picks kernels from the CPUID feature
 * bits, so a CPU without AVX-512 gets the kernels it can run. The workbook loads this library at startup
 * (Util/NativeSetup.cs); WORKBOOK_MKL_VENDOR_FIX=0 turns that off. */
int mkl_serv_intel_cpu_true(void) { return 1; }
