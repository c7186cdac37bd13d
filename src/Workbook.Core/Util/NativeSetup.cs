// What the workbook does to the process's native libraries, once, when the core assembly is first touched (a module
// initializer, so every entry point gets it: the CLI, the tests, the notebook kernels), before TorchSharp loads
// libtorch:
//  1. oneMKL vendor check. libtorch's statically linked oneMKL takes its non-Intel code path on AMD CPUs (f32 GEMM at
//     0.76 of tuned PyTorch on the AVX-512 machine). libworkbook_mklfix.so (built from src/native/mkl_vendor_fix.c
//     beside the assemblies) answers MKL's exported mkl_serv_intel_cpu_true with 1; loaded RTLD_NOW|RTLD_GLOBAL, it
//     interposes libtorch_cpu's PLT call. Opt-in (WORKBOOK_MKL_VENDOR_FIX=1): it was 5-15x slower on an oversubscribed
//     machine (two MKL threads per process), and it changes results in the last bits, so GRPO's sampled tokens and
//     every trajectory differ from runs without it (10% off the main job on the AVX-512 machine; README).
//  2. glibc malloc keeps big blocks instead of mapping and unmapping activation buffers every step (Memory.Tune).
//     Off: WORKBOOK_MALLOC_TUNE=0; speed: also for large models. Large models also get transparent huge pages for
//     libtorch's big buffers (Memory.ForLargeModel).
// Both report their state in Status (bench and info print it); an unknown value of either variable is in Problems,
// which the CLI refuses.
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

    public const string MklVariable = "WORKBOOK_MKL_VENDOR_FIX";

    /// <summary>Environment variables of the native setup set to a value it does not understand (each then takes its
    /// default); the CLI refuses to start on any.</summary>
    public static IReadOnlyList<string> Problems() =>
        new[]
        {
            Environment.GetEnvironmentVariable(MklVariable) is { } v && MklOn(v) is null
                ? $"{MklVariable}={v}: expected 1 (on) or 0 (off, the default)"
                : null,
            Memory.Problem,
        }
            .OfType<string>()
            .ToList();

    /// <summary>true, false, or null for a value that is neither.</summary>
    static bool? MklOn(string? value) =>
        value switch
        {
            "1" or "on" or "true" => true,
            null or "" or "0" or "off" or "false" => false,
            _ => null,
        };

    public static Dictionary<string, string> Status() =>
        new()
        {
            ["mkl_vendor_fix"] = MklVendorFix,
            ["malloc_tuning"] = Memory.State,
            ["huge_pages"] = Memory.HugePages,
        };

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
        if (MklOn(Environment.GetEnvironmentVariable(MklVariable)) != true)
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
