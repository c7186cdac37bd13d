// One torch thread on the calling thread only, for work whose operations are too small for OpenMP (a one-row decoding
// step). libtorch's set_num_threads is process-wide: it also sets the count that threads starting later take (the
// thread pool's, say). So this sets the calling thread's own counts, as set_num_threads does for its caller, and puts
// them back:
//  1. OpenMP (libgomp, loaded with libtorch_cpu): omp_set_num_threads sets the calling thread's count, which ATen's
//     parallel_for and OpenMP regions read (at::get_num_threads is omp_get_max_threads in this build).
//  2. oneMKL: MKL_Set_Num_Threads_Local (the C header's mkl_set_num_threads_local), thread-local; it returns the
//     previous value, which Dispose restores.
//  3. Where a symbol is missing (another libtorch build, not Linux), OnThisThread returns null and nothing changes.
//  4. ATen sets a thread's counts lazily, at its first torch call on that thread, to the process's: OnThisThread makes
//     that call first, so the lazy setting cannot undo it later.
using System.Runtime.InteropServices;

namespace Workbook;

public sealed class OneTorchThread : IDisposable
{
    delegate void SetCount(int n);
    delegate int GetCount();
    delegate int SwapCount(int n);

    sealed record Symbols(SetCount OmpSet, GetCount OmpGet, SwapCount MklLocal, GetCount MklGet);

    static readonly Lazy<Symbols?> symbols = new(Resolve);
    readonly Symbols s;
    readonly int omp,
        mkl;
    bool disposed;

    OneTorchThread(Symbols s, int omp, int mkl) => (this.s, this.omp, this.mkl) = (s, omp, mkl);

    /// <summary>Whether the calling thread's counts can be set (libgomp's and oneMKL's symbols were found).</summary>
    public static bool Available => symbols.Value is not null;

    /// <summary>One OpenMP and one oneMKL thread for the calling thread until Dispose (on the same thread); null
    /// where unavailable. <paramref name="threads"/>: another count (a test gives a thread two).</summary>
    public static OneTorchThread? OnThisThread(int threads = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        if (symbols.Value is not { } s)
            return null;
        _ = TorchSharp.torch.get_num_threads(); // ATen's lazy per-thread setting runs now, not after this
        int omp = s.OmpGet();
        int mkl = s.MklLocal(threads);
        s.OmpSet(threads);
        return new OneTorchThread(s, omp, mkl);
    }

    /// <summary>The calling thread's OpenMP and oneMKL thread counts; null where unavailable.</summary>
    public static (int OpenMP, int OneMkl)? CountsOnThisThread() =>
        symbols.Value is { } s ? (s.OmpGet(), s.MklGet()) : null;

    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        s.OmpSet(omp);
        s.MklLocal(mkl);
    }

    const int RTLD_LAZY = 1,
        RTLD_NOLOAD = 4;

    [DllImport("libc", EntryPoint = "dlopen")]
    static extern IntPtr Dlopen(string file, int mode);

    static Symbols? Resolve()
    {
        if (!OperatingSystem.IsLinux())
            return null;
        try
        {
            _ = TorchSharp.torch.get_num_threads(); // libtorch is loaded by now
            // the loaded library by its soname; a handle's lookup also searches its dependencies (libgomp)
            var h = Dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
            if (
                h == IntPtr.Zero
                || !NativeLibrary.TryGetExport(h, "omp_set_num_threads", out var set)
                || !NativeLibrary.TryGetExport(h, "omp_get_max_threads", out var get)
                // the C entry points, which take the count by value (mkl_set_num_threads_local is Fortran's)
                || !NativeLibrary.TryGetExport(h, "MKL_Set_Num_Threads_Local", out var mkl)
                || !NativeLibrary.TryGetExport(h, "MKL_Get_Max_Threads", out var mklGet)
            )
                return null;
            return new Symbols(
                Marshal.GetDelegateForFunctionPointer<SetCount>(set),
                Marshal.GetDelegateForFunctionPointer<GetCount>(get),
                Marshal.GetDelegateForFunctionPointer<SwapCount>(mkl),
                Marshal.GetDelegateForFunctionPointer<GetCount>(mklGet)
            );
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }
}
