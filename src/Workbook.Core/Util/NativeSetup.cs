// What the workbook does to the process's native libraries, once, when the core assembly is first touched (a module
// initializer, so every entry point gets it: the CLI, the tests, the notebook kernels), before TorchSharp loads
// libtorch:  1. oneMKL vendor check. libtorch's statically linked oneMKL takes its non-Intel code path on AMD CPUs (f32
// GEMM at     less than half speed). libworkbook_mklfix.so (built from src/native/mkl_vendor_fix.c beside the
// assemblies)     answers MKL's exported mkl_serv_intel_cpu_true with 1; loaded RTLD_NOW|RTLD_GLOBAL, it interposes
// libtorch_cpu's     PLT call. Opt-in (WORKBOOK_MKL_VENDOR_FIX=1): on this project's machines it measured faster only
// when the machine     was not oversubscribed (149 vs 115 GFLOP/s at load 8.6) and 5-15x slower when it was (two MKL
// threads per     process), so it is not the default.
//  2. glibc malloc keeps big blocks instead of mapping and unmapping activation buffers every step (Memory.Tune).
//     Off: WORKBOOK_MALLOC_TUNE=0.
// Both report their state in Status (bench and info print it).
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Workbook;

public static class NativeSetup
{
    public const string LibraryName = "libworkbook_mklfix.so";
    const int RTLD_NOW = 2,
        RTLD_GLOBAL = 0x100;
    static int done;

    /// <summary>"on", "off (...)", "late (...)" or "unavailable (...)".</summary>
    public static string MklVendorFix { get; private set; } = "not run";

    public static Dictionary<string, string> Status() =>
        new() { ["mkl_vendor_fix"] = MklVendorFix, ["malloc_tuning"] = Memory.State };

    [DllImport("libc", EntryPoint = "dlopen")]
    static extern IntPtr DlopenLibc(string file, int mode);

    [DllImport("libdl.so.2", EntryPoint = "dlopen")]
    static extern IntPtr DlopenLibdl(string file, int mode);

    [DllImport("libc", EntryPoint = "dlerror")]
    static extern IntPtr DlerrorLibc();

#pragma warning disable CA2255   // a library module initializer is the point here: it must run before any torch call
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Initialize() => Ensure();

    /// <summary>Idempotent; entry points that may touch TorchSharp before the core (the CLI) call it first.</summary>
    public static void Ensure()
    {
        if (Interlocked.Exchange(ref done, 1) == 1)
            return;
        Memory.Tune();
        MklVendorFix = LoadMklFix();
    }

    static string LoadMklFix()
    {
        if (!OperatingSystem.IsLinux())
            return "unavailable (Linux only)";
        if (Environment.GetEnvironmentVariable("WORKBOOK_MKL_VENDOR_FIX") is not ("1" or "on" or "true"))
            return "off (set WORKBOOK_MKL_VENDOR_FIX=1 to turn it on)";
        var dir = Path.GetDirectoryName(typeof(NativeSetup).Assembly.Location);
        var path = string.IsNullOrEmpty(dir) ? null : Path.Combine(dir, LibraryName);
        if (path is null || !File.Exists(path))
            return $"unavailable ({LibraryName} was not built: gcc missing at build time)";
        // libtorch binds lazily (no BIND_NOW), so even a late load interposes while MKL has not asked yet; say so.
        bool late = LibtorchLoaded();
        IntPtr h;
        try
        {
            h = DlopenLibc(path, RTLD_NOW | RTLD_GLOBAL);
        }
        catch (EntryPointNotFoundException)
        {
            h = DlopenLibdl(path, RTLD_NOW | RTLD_GLOBAL);
        } // glibc < 2.34
        catch (DllNotFoundException)
        {
            return "unavailable (no libc dlopen)";
        }
        if (h == IntPtr.Zero)
        {
            string why = "";
            try
            {
                why = Marshal.PtrToStringAnsi(DlerrorLibc()) ?? "";
            }
            catch (EntryPointNotFoundException) { }
            return $"unavailable (dlopen {path}: {why})";
        }
        return late ? "late (libtorch was loaded first; effective only if no GEMM ran yet)" : "on";
    }

    /// <summary>Whether libtorch_cpu.so is already mapped into this process.</summary>
    public static bool LibtorchLoaded()
    {
        try
        {
            return File.ReadLines("/proc/self/maps").Any(l => l.Contains("libtorch_cpu.so"));
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>Whether our library is mapped (the interposing definition is in the global scope).</summary>
    public static bool MklFixLoaded()
    {
        try
        {
            return File.ReadLines("/proc/self/maps").Any(l => l.Contains(LibraryName));
        }
        catch (IOException)
        {
            return false;
        }
    }
}
