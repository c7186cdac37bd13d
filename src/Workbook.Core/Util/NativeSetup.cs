// What the workbook does to the process's native libraries, once, when the core assembly is first touched (a module
// initializer, so every entry point gets it: the CLI, the tests, the notebook kernels), before TorchSharp loads
// libtorch:
//  1. oneMKL vendor check. libtorch's statically linked oneMKL takes its non-Intel code path on AMD CPUs (f32 GEMM at
//     0.76 of tuned PyTorch on the AVX-512 machine). libworkbook_mklfix.so (built from src/native/mkl_vendor_fix.c
//     beside the assemblies) defines MKL's exported mkl_serv_intel_cpu_true; loaded RTLD_NOW|RTLD_GLOBAL, it
//     interposes libtorch_cpu's PLT call. MKL asks once per process, at its first GEMM, so the path is chosen at load:
//     - auto (the default): yes on an AMD CPU (MKL still picks kernels from the CPU's feature bits), MKL's own answer
//       on any other (an Intel CPU gets yes from MKL itself; other vendors are untested). Measured on the AVX-512
//       machine it was faster at every size and load tried: 2048^2 f32 GEMM 204-388 (bimodal by process) against
//       121 GFLOP/s, the 0.6B B1xT128 step 2.5 against 5.1 s, the quick main job 41-44 against 55-60 s, and with
//       two 2-thread processes sharing the 2 cores 2.1-2.7x (GEMM) and 1.4-1.7x (tiny training step) faster
//       (README). Results differ from MKL's own path in the last bits, so GRPO's sampled tokens and trajectories
//       differ too; versions.json records the path.
//     - WORKBOOK_MKL_VENDOR_FIX=1: yes on every CPU; =0: the library is not loaded (MKL's own path).
//  2. glibc malloc keeps big blocks instead of mapping and unmapping activation buffers every step (Memory.Tune).
//     Off: WORKBOOK_MALLOC_TUNE=0; speed: also for large models. Large models also get transparent huge pages for
//     libtorch's big buffers (Memory.ForLargeModel).
// Both report their state in Status (bench, generate --json and versions.json print it); an unknown value of either
// variable is in Problems, which the CLI refuses.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Workbook;

public static class NativeSetup
{
    public const string LibraryName = "libworkbook_mklfix.so";
    const int RTLD_NOW = 2,
        RTLD_GLOBAL = 0x100;
    static int done;
    static string loadState = "not run";
    static bool late;
    static string loadMode = "auto"; // the mode the library was loaded in (a later change of the variable is not)

    /// <summary>The BLAS path this process took, or will take: "on (...)", "off (...)", "auto (...)" before MKL
    /// chose, or "unavailable (...)".</summary>
    public static string MklVendorFix =>
        loadState != Loaded ? loadState
        : late && AskedNative() == 0
            ? "unknown (the library was loaded after libtorch; MKL has not asked it, and may have asked its own check)"
        : Describe(loadMode, FirstAnswerNative(), CpuVendor());

    const string Loaded = "loaded";

    public const string MklVariable = "WORKBOOK_MKL_VENDOR_FIX";

    /// <summary>Environment variables of the native setup set to a value it does not understand (each then takes its
    /// default); the CLI refuses to start on any.</summary>
    public static IReadOnlyList<string> Problems() =>
        new[]
        {
            Environment.GetEnvironmentVariable(MklVariable) is { } v && Mode(v) is null
                ? $"{MklVariable}={v}: expected auto (the default: on for AMD CPUs), 1 (on) or 0 (off)"
                : null,
            Memory.Problem,
            FusedKernels.Problem,
        }
            .OfType<string>()
            .ToList();

    /// <summary>"on", "off", "auto", or null for a value that is none of them.</summary>
    public static string? Mode(string? value) =>
        value switch
        {
            "1" or "on" or "true" => "on",
            "0" or "off" or "false" => "off",
            null or "" or "auto" => "auto",
            _ => null,
        };

    /// <summary>The status line of a loaded library. <paramref name="firstAnswer"/>: the answer MKL got or will get
    /// (1 yes, 0 no, -1 not decided: MKL's own, when it asks); <paramref name="vendor"/>: the CPU's vendor string.
    /// The "on" mode and an AMD CPU fix the answer at load, so it is decided before MKL asks.</summary>
    public static string Describe(string mode, int firstAnswer, string vendor) =>
        (mode, firstAnswer, vendor == Amd) switch
        {
            ("on", 1, _) => "on (WORKBOOK_MKL_VENDOR_FIX=1)",
            ("on", _, _) => "off (WORKBOOK_MKL_VENDOR_FIX=1, but MKL asked before the library was forced on)",
            (_, 1, true) => "on (auto: an AMD CPU; WORKBOOK_MKL_VENDOR_FIX=0 turns it off)",
            (_, _, true) => "off (auto: an AMD CPU, but MKL asked before the library was forced on)",
            (_, 1, _) => $"on (MKL's own check on a {VendorName(vendor)} CPU)",
            (_, 0, _) => $"off (auto: MKL's own answer on a {VendorName(vendor)} CPU; {MklVariable}=1 turns it on)",
            _ => $"auto (MKL's own answer on a {VendorName(vendor)} CPU; MKL has not asked yet)",
        };

    const string Amd = "AuthenticAMD";

    static string VendorName(string vendor) => vendor == "" ? "non-x86 or unknown" : vendor;

    /// <summary>The x86 CPUID vendor string ("AuthenticAMD", "GenuineIntel", ...): from CPUID, else from
    /// /proc/cpuinfo's vendor_id (intrinsics turned off); "" on other architectures.</summary>
    public static string CpuVendor()
    {
        if (!System.Runtime.Intrinsics.X86.X86Base.IsSupported)
            return Devices.CpuInfo("vendor_id") ?? "";
        var (_, b, c, d) = System.Runtime.Intrinsics.X86.X86Base.CpuId(0, 0);
        var bytes = new byte[12];
        BitConverter.TryWriteBytes(bytes.AsSpan(0), b);
        BitConverter.TryWriteBytes(bytes.AsSpan(4), d);
        BitConverter.TryWriteBytes(bytes.AsSpan(8), c);
        return System.Text.Encoding.ASCII.GetString(bytes);
    }

    [DllImport(LibraryName, EntryPoint = "workbook_mklfix_force_if_unasked")]
    static extern int ForceIfUnasked();

    [DllImport(LibraryName, EntryPoint = "workbook_mklfix_first_answer")]
    static extern int FirstAnswerNative();

    [DllImport(LibraryName, EntryPoint = "workbook_mklfix_asked")]
    static extern int AskedNative();

    public static Dictionary<string, string> Status() =>
        new()
        {
            ["mkl_vendor_fix"] = MklVendorFix,
            ["fused_kernels"] = FusedKernels.State,
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
        loadState = LoadMklFix();
    }

    static string LoadMklFix()
    {
        if (!OperatingSystem.IsLinux())
            return "unavailable (Linux only)";
        var mode = Mode(Environment.GetEnvironmentVariable(MklVariable));
        loadMode = mode ?? "auto"; // an unknown value: the CLI refuses it (Problems); elsewhere it is the default
        if (mode == "off")
            return "off (WORKBOOK_MKL_VENDOR_FIX=0)";
        var dir = Path.GetDirectoryName(typeof(NativeSetup).Assembly.Location);
        var path = string.IsNullOrEmpty(dir) ? null : Path.Combine(dir, LibraryName);
        if (path is null || !File.Exists(path))
            return $"unavailable ({LibraryName} was not built: gcc missing at build time)";
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
        // one compare-and-swap in the library: if MKL asked first, its answer stands and MklVendorFix says so
        if (mode == "on" || CpuVendor() == Amd)
            ForceIfUnasked();
        // libtorch binds lazily (no BIND_NOW), so even a late load interposes while MKL has not asked yet. But if
        // libtorch is mapped by now (before the load, or by another thread meanwhile), MKL may have asked its own
        // check: MklVendorFix says unknown until MKL asks this library.
        late = LibtorchLoaded();
        return Loaded;
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
