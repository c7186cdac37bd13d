// `workbook bench` refuses bad input with exit code 2 and a message naming the option, before measuring anything.

namespace Workbook.Tests;

public class BenchCliTests
{
    // with the default oneMKL path, whatever the test process's environment says
    static (int code, string output) Run(params string[] args)
    {
        var (code, o, err) = CliProcess.Run(
            args,
            new Dictionary<string, string?> { ["WORKBOOK_MKL_VENDOR_FIX"] = null }
        );
        return (code, o + err);
    }

    [Theory]
    [InlineData("--vocab", "0", "--vocab 0")]
    [InlineData("--vocab", "200000", "does not fit")]
    [InlineData("--batch", "0", "--batch 0")]
    [InlineData("--gen-batch", "-1", "--gen-batch -1")]
    [InlineData("--dtype", "f16", "f16 is refused")]
    public void BadInputGetsAClearErrorAndExitCode2(string option, string value, string message)
    {
        var (code, output) = Run("bench", "train", option, value);
        Assert.Equal(2, code);
        Assert.Contains(message, output.Replace("\n", " "));
    }

    [Fact]
    public void Every_bench_option_has_a_help_line()
    {
        var missing = typeof(Workbook.Cli.BenchCommand.Settings)
            .GetProperties()
            .Where(p =>
                p.GetCustomAttributes(typeof(Spectre.Console.Cli.CommandOptionAttribute), true).Length > 0
                && p.GetCustomAttributes(typeof(System.ComponentModel.DescriptionAttribute), true).Length == 0
            )
            .Select(p => p.Name);
        Assert.Empty(missing);
    }

    // the stated machine peak follows the CPU's kind: dividing an AVX2 machine's speed by the AVX-512 kind's GEMM
    // (503 GFLOP/s, 7x its own) understated its MFU sevenfold
    [Theory]
    [InlineData("fpu sse2 avx avx2 fma avx512f avx512bw avx512vl avx512dq", "f32", 503.0)]
    [InlineData("fpu sse2 avx avx2 fma avx512f avx512bw avx512vl avx512dq", "bf16", 976.0)]
    [InlineData("fpu sse2 avx avx2 fma sha_ni", "f32", 74.0)]
    [InlineData("fpu sse2 avx avx2 fma sha_ni", "bf16", null)]
    [InlineData("fpu sse2 avx", "f32", null)]
    [InlineData(null, "f32", null)]
    public void Stated_machine_peak_follows_the_cpu_kind(string? flags, string dtype, double? expected)
    {
        var dt = dtype == "bf16" ? TorchSharp.torch.ScalarType.BFloat16 : TorchSharp.torch.ScalarType.Float32;
        var (peak, source) = Workbook.Bench.Benchmarks.StatedMachinePeak(dt, flags);
        Assert.Equal(expected, peak);
        if (peak is null)
            Assert.Contains("--machine-peak", source);
        else
            Assert.Contains($"{peak:0}", source);
    }

    [Fact]
    public void Bench_gemm_writes_no_machine_mfu_where_no_peak_is_stated()
    {
        var (peak, _) = Workbook.Bench.Benchmarks.StatedMachinePeak(TorchSharp.torch.ScalarType.Float32);
        var (code, output) = Run("bench", "gemm", "--size", "64", "--json");
        Assert.Equal(0, code);
        var json = System.Text.Json.Nodes.JsonNode.Parse(output[output.IndexOf('{')..])!.AsObject();
        Assert.Equal(peak is not null, json.ContainsKey("gemm_over_machine_peak"));
        Assert.Equal(peak, json["machine_peak_gflops"]?.GetValue<double>());
        var (code2, output2) = Run("bench", "gemm", "--size", "64", "--json", "--machine-peak", "10");
        Assert.Equal(0, code2);
        var json2 = System.Text.Json.Nodes.JsonNode.Parse(output2[output2.IndexOf('{')..])!.AsObject();
        Assert.Equal(10.0, json2["machine_peak_gflops"]!.GetValue<double>());
        Assert.Equal("--machine-peak", json2["machine_peak_source"]!.GetValue<string>());
    }

    // sampling against greedy comes from alternating pairs on the same prompts: one ratio per pair, the median of
    // them between their extremes, and the token rates from the same runs
    [Fact]
    public void Sample_over_greedy_reports_one_ratio_per_alternating_pair()
    {
        using var model = new Workbook.Model.Qwen3ForCausalLM(
            Workbook.Model.Qwen3Config.Preset("tiny"),
            TorchSharp.torch.ScalarType.Float32,
            TorchSharp.torch.CPU,
            seed: 1
        );
        model.eval();
        var r = Workbook.Bench.Benchmarks.SampleOverGreedy(model, batch: 2, pairs: 3, promptLen: 4, newTokens: 3);
        var pairs = (double[])r["sample_over_greedy_pairs"];
        Assert.Equal(3, pairs.Length);
        Assert.All(pairs, x => Assert.True(x > 0 && double.IsFinite(x)));
        var median = (double)r["sample_over_greedy"];
        Assert.Equal(pairs.Order().ElementAt(1), median);
        Assert.Equal(pairs.Min(), (double)r["sample_over_greedy_min"]);
        Assert.Equal(pairs.Max(), (double)r["sample_over_greedy_max"]);
        Assert.True((double)r["generate_tokens_per_second_batch2"] > 0);
        Assert.True((double)r["sample_tokens_per_second_batch2"] > 0);
    }
}
