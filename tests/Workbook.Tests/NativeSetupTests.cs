// The process-level native setup (Util/NativeSetup.cs): the oneMKL vendor fix is loaded before libtorch in the test
// process too (on for an AMD CPU by default), f32 GEMM stays accurate with it (against a float64 reference), and a CLI
// process reports the path it took.
using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Workbook.Tests;

static class TestProcessSetup
{
#pragma warning disable CA2255   // the test process must load the fix before any test touches TorchSharp
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() =>
        // before any test touches TorchSharp: a test that did first would load libtorch before the library
        NativeSetup.Ensure();
}

public class NativeSetupTests
{
    [Fact]
    public void MklVendorFixIsBuiltAndLoadedBeforeLibtorch()
    {
        var mode = NativeSetup.Mode(Environment.GetEnvironmentVariable(NativeSetup.MklVariable));
        if (mode == "off")
        {
            Assert.Equal("off (WORKBOOK_MKL_VENDOR_FIX=0)", NativeSetup.MklVendorFix);
            Assert.False(NativeSetup.MklFixLoaded());
            return;
        }
        var lib = Path.Combine(AppContext.BaseDirectory, NativeSetup.LibraryName);
        Assert.True(File.Exists(lib), $"{lib} is missing: gcc was not found at build time");
        Assert.True(NativeSetup.MklFixLoaded());
        using (var scope = NewDisposeScope())
            ones(64, 64).matmul(ones(64, 64)); // MKL has chosen its path after this
        var got = NativeSetup.MklVendorFix;
        var vendor = NativeSetup.CpuVendor();
        if (mode == "on")
            Assert.Equal("on (WORKBOOK_MKL_VENDOR_FIX=1)", got);
        else if (vendor == "AuthenticAMD")
            Assert.Equal("on (auto: an AMD CPU; WORKBOOK_MKL_VENDOR_FIX=0 turns it off)", got);
        else if (vendor == "GenuineIntel")
            Assert.Equal("on (MKL's own check on a GenuineIntel CPU)", got);
        else // another vendor, or no MKL at all (not x86): MKL's own answer, or no question yet
            Assert.Matches(@"^(on|off|auto) \((auto: )?MKL's own", got);
    }

    [Theory]
    // mode, MKL's first answer (-1: not asked yet), the CPU's vendor
    [InlineData("auto", 1, "AuthenticAMD", "on (auto: an AMD CPU; WORKBOOK_MKL_VENDOR_FIX=0 turns it off)")]
    [InlineData("auto", 0, "AuthenticAMD", "off (auto: an AMD CPU, but MKL asked before the library was forced on)")]
    [InlineData("auto", 1, "GenuineIntel", "on (MKL's own check on a GenuineIntel CPU)")]
    [InlineData("auto", 0, "HygonGenuine", "off (auto: MKL's own answer on a HygonGenuine CPU; WORKBOOK_MKL_VENDOR")]
    [InlineData("auto", -1, "", "auto (MKL's own answer on a non-x86 or unknown CPU; MKL has not asked yet)")]
    [InlineData("on", 1, "HygonGenuine", "on (WORKBOOK_MKL_VENDOR_FIX=1)")]
    [InlineData("on", 0, "AuthenticAMD", "off (WORKBOOK_MKL_VENDOR_FIX=1, but MKL asked before")]
    public void The_BLAS_status_says_what_MKL_was_told_and_why(
        string mode,
        int firstAnswer,
        string vendor,
        string status
    ) => Assert.StartsWith(status, NativeSetup.Describe(mode, firstAnswer, vendor));

    [Fact]
    public void The_CPU_vendor_is_read_from_CPUID()
    {
        var vendor = NativeSetup.CpuVendor();
        if (!System.Runtime.Intrinsics.X86.X86Base.IsSupported)
        {
            Assert.Equal("", vendor);
            return;
        }
        Assert.Matches("^[ -~]{12}$", vendor);
        // the kernel read the same string (vendor_id in /proc/cpuinfo; absent where an x86 process runs emulated on
        // another architecture: then there is nothing to compare)
        if (Devices.CpuInfo("vendor_id") is { } kernel)
            Assert.Equal(kernel, vendor);
    }

    [Theory]
    [InlineData(null, "auto")]
    [InlineData("auto", "auto")]
    [InlineData("1", "on")]
    [InlineData("true", "on")]
    [InlineData("0", "off")]
    [InlineData("off", "off")]
    [InlineData("yes", null)]
    public void The_BLAS_variable_has_three_modes_and_nothing_else(string? value, string? mode) =>
        Assert.Equal(mode, NativeSetup.Mode(value));

    [Fact]
    public void A_run_records_the_BLAS_path_and_allocator_it_took()
    {
        var v = Workbook.Experiments.ExperimentRunner.Versions();
        Assert.Equal(NativeSetup.MklVendorFix, v["mkl_vendor_fix"]);
        Assert.Equal(Memory.State, v["malloc_tuning"]);
        Assert.Equal(FusedKernels.State, v["fused_kernels"]);
        // and the CPU kind, whose vector unit picks the kernels: the ISA in brackets, as the intrinsics report it
        var isa =
            System.Runtime.Intrinsics.X86.Avx512F.IsSupported ? "(avx512f)"
            : System.Runtime.Intrinsics.X86.Avx2.IsSupported ? "(avx2)"
            : null;
        if (isa is not null)
            Assert.EndsWith(isa, v["cpu"]);
        Assert.Matches(@"^\S.* \([a-z0-9 ]+\)$", v["cpu"]);
    }

    [Fact]
    public void Plus_with_a_held_scalar_is_the_same_kernel_as_the_operator()
    {
        // HeldScalars.Plus replaces a + b (whose implicit alpha a GC may finalize mid-call) without changing a bit
        using var scope = NewDisposeScope();
        using var g = new Generator(3);
        var a = randn([64, 33], generator: g);
        var b = randn([64, 33], generator: g);
        var c = randn([33], generator: g).to(ScalarType.BFloat16);
        Assert.True((a + b).eq(a.Plus(b)).all().item<bool>()); // scalar-safety: on purpose
        var a16 = a.to(ScalarType.BFloat16);
        Assert.True((a16 + c).eq(a16.Plus(c)).all().item<bool>()); // scalar-safety: on purpose
        using Scalar eps = 1e-6;
        Assert.True((a + eps).eq(a.Plus(eps)).all().item<bool>()); // scalar-safety: on purpose
        // and the replacements of TorchSharp's operators with a number
        foreach (var x in new[] { a, a16, a.to(ScalarType.Float64) })
        {
            Assert.True((x / 7L).eq(x.Over(7L)).all().item<bool>()); // scalar-safety: on purpose
            Assert.True((x / 0.7).eq(x.Over(0.7)).all().item<bool>()); // scalar-safety: on purpose
            Assert.True((x * 0.3).eq(x.Times(0.3)).all().item<bool>()); // scalar-safety: on purpose
            Assert.True((0.3 * x).eq(x.Times(0.3)).all().item<bool>()); // scalar-safety: on purpose
            Assert.True((x - 0.1).eq(x.Minus(0.1)).all().item<bool>()); // scalar-safety: on purpose
            Assert.True((1 - x).eq(x.OneMinus()).all().item<bool>()); // scalar-safety: on purpose
        }
    }

    [Fact]
    public void Float32GemmMatchesFloat64Reference()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(5);
        var a = randn([512, 384], generator: g);
        var b = randn([384, 256], generator: g);
        var exact = a.to(ScalarType.Float64).matmul(b.to(ScalarType.Float64));
        var got = a.matmul(b).to(ScalarType.Float64);
        // sum of 384 products of N(0,1): |c| ~ 20; f32 accumulation error ~ 1e-5 relative to that scale
        double err = (got - exact).abs().max().item<double>(),
            scale = exact.abs().max().item<double>();
        Assert.True(err / scale < 1e-5, $"f32 GEMM error {err} at scale {scale}");
    }

    [Theory]
    [InlineData(null, "default")]
    [InlineData("1", "default")]
    [InlineData("0", "off")]
    [InlineData("off", "off")]
    [InlineData("speed", "speed")]
    [InlineData("fast", null)]
    public void The_allocator_variable_has_three_modes_and_nothing_else(string? value, string? mode) =>
        Assert.Equal(mode, Memory.Mode(value));

    [Fact]
    public void Only_the_default_mode_switches_large_models_to_returning_big_blocks()
    {
        Assert.True(Memory.UsesLargeModelSetting(600_000_000, null));
        Assert.True(Memory.UsesLargeModelSetting(100_000_000, "1"));
        Assert.False(Memory.UsesLargeModelSetting(99_999_999, null)); // the main job's model keeps big blocks
        Assert.False(Memory.UsesLargeModelSetting(600_000_000, "speed"));
    }

    [Theory]
    [InlineData("WORKBOOK_MALLOC_TUNE", "fast", "expected 0 (off), 1 (the default) or speed")]
    [InlineData("WORKBOOK_MKL_VENDOR_FIX", "yes", "expected auto (the default: on for AMD CPUs), 1 (on) or 0 (off)")]
    [InlineData(
        "WORKBOOK_FUSED_KERNELS",
        "2",
        "expected auto (the default: on where libworkbook_fused.so was built) or 0"
    )]
    public void The_cli_refuses_a_native_setup_variable_it_does_not_understand(string name, string value, string hint)
    {
        var (code, _, err) = CliProcess.Run(["info"], new Dictionary<string, string?> { [name] = value });
        Assert.Equal(2, code);
        Assert.Contains($"{name}={value}: {hint}", err);
    }

    [Fact]
    public void Advised_huge_page_bytes_count_only_mappings_flagged_hg()
    {
        var smaps = string.Join(
            "\n",
            "7f0000000000-7f0000400000 rw-p 00000000 00:00 0",
            "Size:               4096 kB",
            "Rss:                4096 kB",
            "VmFlags: rd wr mr mw me ac sd",
            "7f0000400000-7f0000c00000 rw-p 00000000 00:00 0",
            "Size:               8192 kB",
            "AnonHugePages:      6144 kB",
            "VmFlags: rd wr mr mw me ac sd hg",
            "7f0001000000-7f0001200000 rw-p 00000000 00:00 0",
            "Size:               2048 kB",
            "VmFlags: rd wr mr mw me nh",
            "7f0002000000-7f0002200000 rw-p 00000000 00:00 0",
            "Size:               2048 kB",
            "VmFlags: hg rd wr"
        );
        Assert.Equal((8192L + 2048) * 1024, Memory.AdvisedHugePageBytes(smaps));
        Assert.Equal(0, Memory.AdvisedHugePageBytes("7f00-7f01 rw-p 0 00:00 0\nSize: 4 kB\nVmFlags: rd wr nh\n"));
    }

    /// <summary>The kernel's transparent-huge-page mode ("always", "madvise", "never"), null without the file.
    /// </summary>
    static string? KernelHugePages()
    {
        const string f = "/sys/kernel/mm/transparent_hugepage/enabled";
        if (!File.Exists(f))
            return null;
        var t = File.ReadAllText(f);
        return t[(t.IndexOf('[') + 1)..t.IndexOf(']')];
    }

    [Theory]
    [InlineData(null, "madvise", null)]
    [InlineData(null, "always", null)]
    [InlineData(null, null, "off (no /sys/kernel/mm/transparent_hugepage/enabled: no huge pages to ask for)")]
    [InlineData(null, "never", "off (the kernel's transparent_hugepage/enabled is never)")]
    [InlineData("0", "madvise", "user (THP_MEM_ALLOC_ENABLE=0)")]
    [InlineData("1", "never", "user (THP_MEM_ALLOC_ENABLE=1)")]
    public void Huge_pages_are_asked_for_unless_the_user_or_the_kernel_decided(
        string? user,
        string? kernel,
        string? notAsked
    ) => Assert.Equal(notAsked, Memory.HugePagesNotAsked(user, kernel));

    /// <summary>A CLI process that builds Qwen3-0.6B's shape in bf16 (1.2 GB of parameters, the cheapest large
    /// model to build) and makes one greedy token: its native status as generate --json reports it.</summary>
    static System.Text.Json.JsonElement LargeModelNativeStatus(string? variable, string? value)
    {
        string[] args =
        [
            "generate",
            "--preset",
            "qwen3-0.6b",
            "--dtype",
            "bf16",
            "--ids",
            "1,2,3",
            "--max-new-tokens",
            "1",
            "--greedy",
            "--json",
        ];
        // the defaults, whatever the test process inherited: any of these would change what the run decides
        var env = new[] { Memory.HugePageVariable, Memory.Variable, NativeSetup.MklVariable }
            .Concat(Memory.UserMallocVariables)
            .ToDictionary(k => k, k => (string?)null);
        if (variable is not null)
            env[variable] = value;
        env[Devices.AllowSlowBf16] = "1"; // three tokens: quick enough without AVX-512's bf16 matmul
        var (code, o, err) = CliProcess.Run(args, env, timeoutMs: 180_000);
        Assert.True(code == 0, err);
        using var doc = System.Text.Json.JsonDocument.Parse(o);
        return doc.RootElement.GetProperty("native").Clone();
    }

    /// <summary>How the auto mode's status begins on this CPU, whether MKL has asked or not.</summary>
    static string DefaultBlasPattern() =>
        NativeSetup.CpuVendor() == "AuthenticAMD" ? @"^on \(auto: an AMD CPU" : @"^(on|off|auto) \(.*MKL's own";

    [Theory]
    // "default": the auto mode's answer on this CPU, whether or not MKL has asked (bf16's GEMMs are oneDNN's)
    [InlineData(null, null, "large-model", "on (libtorch's", "default")]
    // the user's malloc settings leave malloc alone, but not huge pages
    [InlineData("MALLOC_ARENA_MAX", "2", "user (MALLOC_ARENA_MAX is set)", "on (libtorch's", "default")]
    // the user's own THP_MEM_ALLOC_ENABLE is kept, and what it did is checked
    [InlineData("THP_MEM_ALLOC_ENABLE", "0", "large-model", "off (the user's THP_MEM_ALLOC_ENABLE=0)", "default")]
    // the user can keep MKL's own path (for any model; here a large one)
    [InlineData("WORKBOOK_MKL_VENDOR_FIX", "0", "large-model", "on (libtorch's", "off (WORKBOOK_MKL_VENDOR_FIX=0)")]
    public void A_large_model_built_by_the_cli_gets_huge_pages_and_says_which_BLAS_path_it_took(
        string? variable,
        string? value,
        string malloc,
        string hugePages,
        string blas
    )
    {
        if (!OperatingSystem.IsLinux())
            return;
        var native = LargeModelNativeStatus(variable, value);
        Assert.Equal(malloc, native.GetProperty("malloc_tuning").GetString());
        var mkl = native.GetProperty("mkl_vendor_fix").GetString()!;
        if (File.Exists(Path.Combine(AppContext.BaseDirectory, NativeSetup.LibraryName)) || value == "0")
            if (blas == "default")
                Assert.Matches(DefaultBlasPattern(), mkl);
            else
                Assert.StartsWith(blas, mkl);
        var got = native.GetProperty("huge_pages").GetString()!;
        if (KernelHugePages() is "never" or null && variable is null or "MALLOC_ARENA_MAX" or NativeSetup.MklVariable)
            Assert.StartsWith("off (", got);
        else
            Assert.StartsWith(hugePages, got);
    }
}
