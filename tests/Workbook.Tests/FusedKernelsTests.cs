// The fused float32 RMSNorm (Util/FusedKernels.cs, src/native/fused_kernels.c): the output and both gradients
// against the formula in float64 at the model's widths (96, 24), the kernel's tails (13, 3), a wide row (1024); the
// no-grad path gives the autograd path's bits, also for a non-contiguous input; Qwen3RMSNorm takes it in float32 and
// the composite ops when suspended; the kernel built for plain x86-64 (SSE2, no clones) gives the shipped library's
// bits; and a loop of forward and backward passes leaves no tensor behind.
using System.Runtime.InteropServices;
using TorchSharp;
using Workbook;
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class FusedKernelsTests
{
    static bool Off => FusedKernels.State.StartsWith("off (");

    static void AssertOn()
    {
        var lib = Path.Combine(AppContext.BaseDirectory, FusedKernels.LibraryName);
        Assert.True(File.Exists(lib), $"{lib} is missing: gcc was not found at build time");
        Assert.True(FusedKernels.Enabled, FusedKernels.State);
        Assert.StartsWith("on (", FusedKernels.State);
    }

    static double RelErr(Tensor got, Tensor want) =>
        (got.to(ScalarType.Float64) - want).abs().max().item<double>() / want.abs().max().item<double>();

    [Theory]
    [InlineData(new long[] { 3, 7, 96 })]
    [InlineData(new long[] { 4, 5, 4, 24 })]
    [InlineData(new long[] { 9, 13 })]
    [InlineData(new long[] { 6, 3 })]
    [InlineData(new long[] { 2, 1024 })]
    [InlineData(new long[] { 32, 72, 4, 24 })] // q_norm in a main-job SFT step: the weight's gradient sums 9,216 rows
    public void Fused_rms_norm_and_its_gradients_match_the_formula_in_float64(long[] shape)
    {
        if (Off)
            return;
        AssertOn();
        using var _ = NewDisposeScope();
        long dim = shape[^1];
        const double eps = 1e-6;
        using Scalar three = 3;
        var x = TestData.Randn(shape, 11).mul(three).requires_grad_(true);
        var w = TestData.Randn([dim], 12).Plus(HeldScalars.One).requires_grad_(true);
        // the incoming gradient as a transposed view: the backward must read it by its strides
        long[] swapped = [.. shape[..^2], shape[^1], shape[^2]];
        var g = TestData.Randn(swapped, 13).transpose(-2, -1);
        Assert.False(g.is_contiguous());
        var y = FusedKernels.RmsNorm(x, w, eps);
        y.backward([g]);
        var x64 = x.detach().to(ScalarType.Float64).requires_grad_(true);
        var w64 = w.detach().to(ScalarType.Float64).requires_grad_(true);
        using Scalar two = 2,
            e = eps;
        var want = w64 * (x64 * rsqrt(x64.pow(two).mean([-1L], keepdim: true).Plus(e)));
        want.backward([g.to(ScalarType.Float64)]);
        Assert.InRange(RelErr(y, want.detach()), 0, 1e-6);
        Assert.InRange(RelErr(x.grad!, x64.grad!), 0, 2e-6);
        Assert.InRange(RelErr(w.grad!, w64.grad!), 0, 2e-6);
    }

    [Fact]
    public void The_no_grad_path_gives_the_autograd_paths_bits_and_the_model_takes_it()
    {
        if (Off)
            return;
        AssertOn();
        using var _ = NewDisposeScope();
        var x = TestData.Randn([5, 24, 96], 21).transpose(0, 1); // [24, 5, 96], not contiguous
        using var norm = new Qwen3RMSNorm(96, 1e-6, ScalarType.Float32, CPU);
        using (no_grad())
            norm.weight.copy_(TestData.Randn([96], 22));
        var withGrad = FusedKernels.RmsNorm(x.requires_grad_(true), norm.weight, 1e-6).detach();
        Tensor noGrad,
            model,
            composite;
        using (no_grad())
        {
            noGrad = FusedKernels.RmsNorm(x, norm.weight, 1e-6);
            model = norm.forward(x);
            using (FusedKernels.Suspend())
                composite = norm.forward(x);
        }
        Assert.Equal(x.shape, noGrad.shape);
        Assert.True(noGrad.eq(withGrad).all().item<bool>());
        Assert.True(
            noGrad.eq(FusedKernels.RmsNorm(x.contiguous().detach(), norm.weight.detach(), 1e-6)).all().item<bool>()
        );
        Assert.True(model.eq(noGrad).all().item<bool>());
        // suspended: libtorch's ops, another summation order; close, and not the same bits everywhere
        Assert.False(composite.eq(model).all().item<bool>());
        Assert.True(composite.allclose(model, rtol: 1e-5, atol: 1e-6));
        Assert.True(FusedKernels.Enabled); // Suspend ended with its scope
    }

    [Fact]
    public void The_kernel_built_for_plain_x86_64_gives_the_shipped_librarys_bits()
    {
        if (Off || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            return;
        AssertOn();
        var source = Path.Combine(TestData.RepoRoot, "src", "native", "fused_kernels.c");
        var dir = TestData.TempDir();
        var plain = Path.Combine(dir, "libplain.so");
        // the flags of Directory.Build.targets' BuildFusedKernels, for the baseline ISA and without clones
        var psi = new System.Diagnostics.ProcessStartInfo(
            "gcc",
            ["-O3", "-ffp-contract=off", "-fno-math-errno", "-march=x86-64", "-DWORKBOOK_NO_CLONES", "-shared", "-fPIC"]
        )
        {
            RedirectStandardError = true,
        };
        foreach (var arg in new[] { "-o", plain, source, "-lm" })
            psi.ArgumentList.Add(arg);
        using (var gcc = System.Diagnostics.Process.Start(psi)!)
        {
            var err = gcc.StandardError.ReadToEnd();
            Assert.True(gcc.WaitForExit(60_000), "gcc did not finish");
            Assert.True(gcc.ExitCode == 0, err);
        }
        var shipped = Path.Combine(AppContext.BaseDirectory, FusedKernels.LibraryName);
        var rng = new Random(5);
        float[] Rand(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        foreach (var (rows, dim) in new[] { (37, 96), (11, 13) }) // 13: the eight lanes' tail
        {
            float[] x = Rand(rows * dim),
                w = Rand(dim),
                gy = Rand(rows * dim);
            var a = FusedKernels.RunBuild(shipped, x, w, gy, 1e-6f);
            var b = FusedKernels.RunBuild(plain, x, w, gy, 1e-6f);
            Assert.Equal(a.Y, b.Y);
            Assert.Equal(a.GradX, b.GradX);
            Assert.Equal(a.GradW, b.GradW);
            Assert.Contains(a.GradW, v => v != 0); // not vacuous
        }
    }

    [Fact]
    public void Forward_and_backward_passes_leave_no_tensor_behind()
    {
        if (Off)
            return;
        AssertOn();
        using var norm = new Qwen3RMSNorm(24, 1e-6, ScalarType.Float32, CPU);
        using var x = TestData.Randn([8, 3, 24], 31);
        void Step()
        {
            using var scope = NewDisposeScope();
            var xi = x.detach().requires_grad_(true);
            norm.forward(xi).sum().backward();
            norm.weight.grad = null;
        }
        Step();
        var before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 50; i++)
            Step();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    /// <summary>Only the input, or only the weight, requiring a gradient: each gets the one it asked for, equal to
    /// the full case's.</summary>
    [Fact]
    public void One_side_requiring_a_gradient_gets_the_same_gradient()
    {
        if (Off)
            return;
        AssertOn();
        using var _ = NewDisposeScope();
        var g = TestData.Randn([6, 96], 41);
        (Tensor? Gx, Tensor? Gw) Run(bool x, bool w)
        {
            var xi = TestData.Randn([6, 96], 42).requires_grad_(x);
            var wi = TestData.Randn([96], 43).requires_grad_(w);
            FusedKernels.RmsNorm(xi, wi, 1e-6).backward([g]);
            return (xi.grad, wi.grad);
        }
        var both = Run(true, true);
        var onlyX = Run(true, false);
        var onlyW = Run(false, true);
        Assert.True(onlyX.Gx!.eq(both.Gx!).all().item<bool>());
        Assert.Null(onlyX.Gw);
        Assert.True(onlyW.Gw!.eq(both.Gw!).all().item<bool>());
        Assert.Null(onlyW.Gx);
    }

    /// <summary>A backward that builds a graph (Hessian-vector products, Theory/Curvature.cs) differentiates the
    /// gradient itself: H·v through the fused norm equals float64's, as the composite ops' does.</summary>
    [Fact]
    public void Second_derivatives_through_the_fused_norm_are_the_formulas()
    {
        if (Off)
            return;
        AssertOn();
        using var _ = NewDisposeScope();
        var c = TestData.Randn([4, 5, 24], 51);
        var vx = TestData.Randn([4, 5, 24], 52);
        var vw = TestData.Randn([24], 53);
        (Tensor Hx, Tensor Hw) Hv(ScalarType dtype)
        {
            var x = TestData.Randn([4, 5, 24], 54).to(dtype).requires_grad_(true);
            using var norm = new Qwen3RMSNorm(24, 1e-6, dtype, CPU);
            using (no_grad())
                norm.weight.copy_(TestData.Randn([24], 55).Plus(HeldScalars.One));
            var y = norm.forward(x);
            var f = y.mul(y).mul(c.to(dtype)).sum();
            var g = autograd.grad([f], [x, norm.weight], retain_graph: true, create_graph: true);
            var dot = g[0].mul(vx.to(dtype)).sum().Plus(g[1].mul(vw.to(dtype)).sum());
            var h = autograd.grad([dot], [x, norm.weight]);
            return (h[0].detach(), h[1].detach());
        }
        var fused = Hv(ScalarType.Float32);
        (Tensor Hx, Tensor Hw) composite;
        using (FusedKernels.Suspend())
            composite = Hv(ScalarType.Float32);
        var exact = Hv(ScalarType.Float64); // float64 takes the composite ops
        Assert.InRange(RelErr(fused.Hx, exact.Hx), 0, 1e-5);
        Assert.InRange(RelErr(fused.Hw, exact.Hw), 0, 1e-5);
        Assert.InRange(RelErr(composite.Hx, exact.Hx), 0, 1e-5);
        Assert.True(exact.Hx.abs().max().item<double>() > 1e-3); // not vacuous
    }
}
