// What the workbook does to the process's native libraries, once, when the core assembly is first touched (a module
// initializer, so every entry point gets it: the CLI, the tests, the notebook kernels), before TorchSharp loads
// libtorch:
//  1. oneMKL vendor check. libtorch's statically linked oneMKL takes its non-Intel code path on AMD CPUs (f32 GEMM at
//     0.76 of tuned PyTorch on the AVX-512 machine). libworkbook_mklfix.so (built from src/native/mkl_vendor_fix.c
//     beside the assemblies) defines MKL's exported mkl_serv_intel_cpu_true; loaded RTLD_NOW|RTLD_GLOBAL, it
//     interposes libtorch_cpu's PLT call. MKL asks once per process, at its first GEMM, so the path is chosen then:
//     - auto (the default): MKL's own answer, unless a large model (>= 100M parameters, Memory.ForLargeModel)
//       is built before MKL asks (before the process's first GEMM): then yes, fixed by one compare-and-swap. A
//       large model's run is the machine's one job, and its f32 step takes half the time (0.6B B1xT128: 2.5-2.8
//       against 5.1 s). Small models keep MKL's own path: with two MKL threads on an oversubscribed machine the
//       fixed path was 5-15x slower, and it changes results in the last bits, so GRPO's sampled tokens and every
//       trajectory differ (the README's measured runs are all small-model runs). The test process pins the auto
//       choice (PinMklPath), so that no test's numbers depend on which test built a large model first.
//     - WORKBOOK_MKL_VENDOR_FIX=1: yes for every model (10% off the main job on the AVX-512 machine; README);
//       =0: the library is not loaded.
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
    static string loadState = "not run";
    static string? pinned;
    static bool forcedByLargeModel,
        late;

    /// <summary>The BLAS path this process took, or will take: "on (...)", "off (...)", "auto (...)" before MKL
    /// chose, or "unavailable (...)".</summary>
    public static string MklVendorFix =>
        loadState != Loaded ? loadState
        : late && FirstAnswer() == -1
            ? "unknown (the library was loaded after libtorch, which may have bound MKL's own check)"
        : Describe(
            Mode(Environment.GetEnvironmentVariable(MklVariable)) ?? "auto",
            FirstAnswer(),
            forcedByLargeModel,
            pinned
        );

    const string Loaded = "loaded";

    public const string MklVariable = "WORKBOOK_MKL_VENDOR_FIX";

    /// <summary>Environment variables of the native setup set to a value it does not understand (each then takes its
    /// default); the CLI refuses to start on any.</summary>
    public static IReadOnlyList<string> Problems() =>
        new[]
        {
            Environment.GetEnvironmentVariable(MklVariable) is { } v && Mode(v) is null
                ? $"{MklVariable}={v}: expected auto (the default: on for large models), 1 (on) or 0 (off)"
                : null,
            Memory.Problem,
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

    /// <summary>The status line of a loaded library. <paramref name="firstAnswer"/>: what MKL was told at its first
    /// question (1 yes, 0 no, -1 not asked yet); <paramref name="forced"/>: the auto mode said yes for a large model;
    /// <paramref name="pinnedBy"/>: who pinned the auto mode to MKL's own answer.</summary>
    public static string Describe(string mode, int firstAnswer, bool forced, string? pinnedBy) =>
        (mode, firstAnswer) switch
        {
            ("on", 0) => "off (WORKBOOK_MKL_VENDOR_FIX=1, but MKL asked before the library was forced on)",
            ("on", _) => "on",
            (_, 1) when forced => "on (auto: a large model was built before the first GEMM)",
            (_, -1) when forced => "on (auto: a large model; MKL has not chosen its path yet)",
            (_, 1) => "on (MKL's own check: an Intel CPU)",
            (_, 0) when pinnedBy is not null => $"off (auto, pinned to MKL's own path: {pinnedBy})",
            (_, 0) => "off (auto: no large model before the first GEMM; WORKBOOK_MKL_VENDOR_FIX=1 turns it on)",
            _ when pinnedBy is not null => $"auto (pinned to MKL's own path: {pinnedBy}; MKL has not chosen yet)",
            _ => "auto (MKL has not chosen its path yet: on if a large model is built first)",
        };

    [DllImport(LibraryName, EntryPoint = "workbook_mklfix_force_if_unasked")]
    static extern int ForceIfUnasked();

    [DllImport(LibraryName, EntryPoint = "workbook_mklfix_first_answer")]
    static extern int FirstAnswerNative();

    static int FirstAnswer() => loadState == Loaded ? FirstAnswerNative() : -1;

    /// <summary>Keeps the auto mode on MKL's own answer for the rest of the process, whatever models are built
    /// (the test process: no test's numbers may depend on which test built a large model first).</summary>
    public static void PinMklPath(string why)
    {
        Ensure();
        pinned ??= why;
    }

    /// <summary>Called when a large model is built (Memory.ForLargeModel): in the auto mode, MKL is told yes if it has
    /// not asked yet (item 1 above).</summary>
    public static void ForLargeModel()
    {
        if (
            loadState != Loaded
            || pinned is not null
            || Mode(Environment.GetEnvironmentVariable(MklVariable)) != "auto"
        )
            return;
        // one compare-and-swap in the library: if MKL asked first, its answer stands and MklVendorFix says so
        if (!late)
            forcedByLargeModel = ForceIfUnasked() != 0;
    }

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
        loadState = LoadMklFix();
    }

    static string LoadMklFix()
    {
        if (!OperatingSystem.IsLinux())
            return "unavailable (Linux only)";
        var mode = Mode(Environment.GetEnvironmentVariable(MklVariable));
        if (mode == "off")
            return "off (WORKBOOK_MKL_VENDOR_FIX=0)";
        var dir = Path.GetDirectoryName(typeof(NativeSetup).Assembly.Location);
        var path = string.IsNullOrEmpty(dir) ? null : Path.Combine(dir, LibraryName);
        if (path is null || !File.Exists(path))
            return $"unavailable ({LibraryName} was not built: gcc missing at build time)";
        // libtorch binds lazily (no BIND_NOW), so even a late load interposes while MKL has not asked yet; the
        // library records what MKL was told (MklVendorFix)
        late = LibtorchLoaded();
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
        if (mode == "on")
            ForceIfUnasked();
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
