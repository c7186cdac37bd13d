// The process-level native setup (Util/NativeSetup.cs): the oneMKL vendor fix is loaded before libtorch in the test
// process too, and f32 GEMM stays accurate with it (against a float64 reference).
using System.Runtime.CompilerServices;
using static TorchSharp.torch;

namespace Workbook.Tests;

static class TestProcessSetup
{
#pragma warning disable CA2255   // the test process must load the fix before any test touches TorchSharp
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() => NativeSetup.Ensure();
}

public class NativeSetupTests
{
    static bool Disabled =>
        Environment.GetEnvironmentVariable("WORKBOOK_MKL_VENDOR_FIX") is not ("1" or "on" or "true");

    [Fact]
    public void MklVendorFixIsBuiltAndLoadedBeforeLibtorch()
    {
        if (Disabled)
        {
            Assert.StartsWith("off", NativeSetup.MklVendorFix);
            return;
        }
        var lib = Path.Combine(AppContext.BaseDirectory, NativeSetup.LibraryName);
        Assert.True(File.Exists(lib), $"{lib} is missing: gcc was not found at build time");
        Assert.Equal("on", NativeSetup.MklVendorFix);
        Assert.True(NativeSetup.MklFixLoaded());
    }

    [Fact]
    public void A_run_records_the_BLAS_path_and_allocator_it_took()
    {
        var v = Workbook.Experiments.ExperimentRunner.Versions();
        Assert.Equal(NativeSetup.MklVendorFix, v["mkl_vendor_fix"]);
        Assert.Equal(Memory.State, v["malloc_tuning"]);
    }

    [Fact]
    public void Float32GemmMatchesFloat64Reference()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(5);
        var a = randn([512, 384], generator: g);
        var b = randn([384, 256], generator: g);
        var exact = a.to(ScalarType.Float64).matmul(b.to(ScalarType.Float64));
        var got = a.matmul(b).to(ScalarType.Float64);
        // sum of 384 products of N(0,1): |c| ~ 20; f32 accumulation error ~ 1e-5 relative to that scale
        double err = (got - exact).abs().max().item<double>(),
            scale = exact.abs().max().item<double>();
        Assert.True(err / scale < 1e-5, $"f32 GEMM error {err} at scale {scale}");
    }
}

public class MklPolicyTests
{
    [Theory]
    [InlineData("run all", true)]
    [InlineData("run all --quick --seeds 2", true)]
    [InlineData("sweep --beta 0.5", true)]
    [InlineData("run all --model /m", false)]
    [InlineData("run all --model=/m", false)]
    [InlineData("run all --set model=\"/m\"", false)]
    [InlineData("train --options o.json", false)]
    [InlineData("bench train", false)]
    [InlineData("notebooks run", false)]
    [InlineData("", false)]
    public void The_cli_turns_the_fix_on_only_for_runs_of_the_small_model(string args, bool on) =>
        Assert.Equal(
            on,
            Workbook.Cli.MklPolicy.SingleThreadedSmallModel(args.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        );

    [Fact]
    public void A_config_or_resumed_run_that_names_a_model_keeps_the_fix_off()
    {
        var dir = TestData.TempDir();
        var big = Path.Combine(dir, "big.json");
        var small = Path.Combine(dir, "small.json");
        File.WriteAllText(big, "{\"model\": \"/models/qwen3\"}");
        File.WriteAllText(small, "{\"model\": null, \"seeds\": 2}");
        Assert.False(Workbook.Cli.MklPolicy.SingleThreadedSmallModel(["run", "all", "--config", big]));
        Assert.True(Workbook.Cli.MklPolicy.SingleThreadedSmallModel(["run", "all", "--config", small]));
        Assert.False(Workbook.Cli.MklPolicy.SingleThreadedSmallModel(["run", "all", "--config", "/no/such.json"]));
        var run = Path.Combine(dir, "run");
        Directory.CreateDirectory(run);
        File.Copy(big, Path.Combine(run, "config.json"));
        Assert.False(Workbook.Cli.MklPolicy.SingleThreadedSmallModel(["run", "all", "--resume", run]));
    }
}
