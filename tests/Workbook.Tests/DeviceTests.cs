// Dtypes the machine cannot run fast are refused where a user asks for them (issue 13's bad input): f16 everywhere on
// CPU, and bf16 on a CPU without libtorch's oneDNN bf16 path (AVX-512 BW, VL and DQ), with an explicit override.
using TorchSharp;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class DeviceTests
{
    [Fact]
    public void Bf16_on_a_cpu_without_avx512_bw_vl_dq_is_refused_naming_the_option_the_flags_and_the_override()
    {
        var e = Assert.Throws<WorkbookException>(() =>
            Devices.CheckDTypeFast(ScalarType.BFloat16, DeviceType.CPU, "--dtype", ["avx512bw", "avx512vl"], null)
        );
        Assert.StartsWith("--dtype: bf16 is refused on this CPU", e.Message);
        Assert.Contains("lacks avx512bw, avx512vl,", e.Message);
        Assert.Contains("Use f32, or set WORKBOOK_ALLOW_SLOW_BF16=1", e.Message);
        // "0" and "" leave the refusal; anything but 0/1 is itself bad input
        Assert.Throws<WorkbookException>(() =>
            Devices.CheckDTypeFast(ScalarType.BFloat16, DeviceType.CPU, "--dtype", ["avx512bw"], "0")
        );
        var bad = Assert.Throws<WorkbookException>(() =>
            Devices.CheckDTypeFast(ScalarType.BFloat16, DeviceType.CPU, "--dtype", ["avx512bw"], "yes")
        );
        Assert.Equal("WORKBOOK_ALLOW_SLOW_BF16='yes': expected 1 (allow slow bf16) or 0", bad.Message);
        // allowed: the override, f32, a CPU with the flags, a GPU
        Devices.CheckDTypeFast(ScalarType.BFloat16, DeviceType.CPU, "--dtype", ["avx512bw"], "1");
        Devices.CheckDTypeFast(ScalarType.Float32, DeviceType.CPU, "--dtype", ["avx512bw"], null);
        Devices.CheckDTypeFast(ScalarType.BFloat16, DeviceType.CPU, "--dtype", [], null);
        Devices.CheckDTypeFast(ScalarType.BFloat16, DeviceType.CUDA, "--dtype", ["avx512bw"], null);
    }

    [Fact]
    public void The_missing_flags_are_read_from_cpuinfo_and_nothing_is_known_off_x86()
    {
        Assert.Equal(
            ["avx512bw", "avx512vl", "avx512dq"],
            Devices.MissingBf16Flags("fpu sse2 avx2 fma avx512bwx", x86: true)
        );
        Assert.Equal(["avx512vl"], Devices.MissingBf16Flags("avx2 avx512f avx512dq avx512bw avx512cd", x86: true));
        Assert.Empty(Devices.MissingBf16Flags("avx512vl avx512bw avx512dq", x86: true));
        Assert.Empty(Devices.MissingBf16Flags("fp asimd", x86: false));
    }

    [Fact]
    public void F16_and_unknown_dtypes_are_refused_and_the_names_parse()
    {
        Assert.Contains("f16 is refused", Assert.Throws<WorkbookException>(() => Devices.ParseDType("fp16")).Message);
        Assert.Contains(
            "unknown dtype 'f64'",
            Assert.Throws<WorkbookException>(() => Devices.ParseDType("f64")).Message
        );
        Assert.Equal(ScalarType.BFloat16, Devices.ParseDType(" BF16 "));
        Assert.Equal(ScalarType.Float32, Devices.ParseDType(null));
    }

    [Fact]
    public void The_cli_refuses_bf16_exactly_where_this_cpu_lacks_the_flags_and_runs_it_with_the_override()
    {
        string[] args = ["bench", "gemm", "--dtype", "bf16", "--size", "8", "--json"];
        var missing = Devices.MissingBf16Flags();
        var (code, _, err) = CliProcess.Run(args, new Dictionary<string, string?> { [Devices.AllowSlowBf16] = null });
        if (missing.Count > 0)
        {
            Assert.Equal(2, code); // bad input
            Assert.Contains("--dtype: bf16 is refused on this CPU", err);
            Assert.Contains(string.Join(", ", missing), err);
        }
        else
            Assert.True(code == 0, err);
        var allowed = CliProcess.Run(args, new Dictionary<string, string?> { [Devices.AllowSlowBf16] = "1" });
        Assert.True(allowed.Code == 0, allowed.Err);
        Assert.Contains("\"gemm_size\": 8", allowed.Out);
    }
}
