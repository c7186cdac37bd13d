// Training/AdamW.cs against libtorch's own torch.optim.AdamW (TorchSharp's binding), and its set-to-none zero_grad.

using Workbook.Training;
using static TorchSharp.torch;
using Parameter = TorchSharp.Modules.Parameter;

namespace Workbook.Tests;

public class AdamWTests
{
    static readonly TorchSharp.Scalar Two = 2; // held: see HeldScalars

    static (Parameter a, Parameter b) Pair(long seed)
    {
        using var g = new Generator((ulong)seed);
        return (
            new Parameter(randn([7, 5], dtype: ScalarType.Float32, generator: g)),
            new Parameter(randn([5], dtype: ScalarType.Float32, generator: g))
        );
    }

    static Tensor Loss(Parameter a, Parameter b, Tensor x) => x.matmul(a).Plus(b).tanh().pow(Two).sum();

    /// <summary>Against TorchSharp's AdamW (a separate implementation of torch's algorithm), float32 as the workbook
    /// trains: the two agree to float32 rounding over five steps; the closed-form test below pins eps's
    /// placement.</summary>
    [Fact]
    public void Five_steps_match_TorchSharp_AdamW_with_weight_decay()
    {
        using var scope = NewDisposeScope();
        var (a1, b1) = Pair(3);
        var (a2, b2) = Pair(3);
        var x = TestData.Randn([4, 7], 9);
        var ours = new AdamW([("a", a1), ("b", b1)], beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1);
        var theirs = optim.AdamW([a2, b2], lr: 0.05, beta1: 0.8, beta2: 0.95, eps: 1e-6, weight_decay: 0.1);
        for (int s = 0; s < 5; s++)
        {
            ours.ZeroGrad();
            Loss(a1, b1, x).backward();
            ours.StepWith(0.05);
            theirs.zero_grad();
            Loss(a2, b2, x).backward();
            theirs.step();
        }
        float da = (a1 - a2).abs().max().item<float>(),
            moved = (a1 - Pair(3).a).abs().max().item<float>();
        Assert.True(da < 2e-6, $"matrix differs from torch.optim.AdamW by {da} (moved {moved})");
        Assert.True(b1.allclose(b2, rtol: 0, atol: 2e-6), "vector differs from torch.optim.AdamW");
        ours.Dispose();
    }

    /// <summary>torch.optim.AdamW's first step from zero state, in closed form: m̂ = g, v̂ = g², so
    /// p₁ = p₀·(1 − lr·wd) − lr·g / (|g| + eps), with eps added after the bias correction.</summary>
    [Fact]
    public void First_step_is_torchs_closed_form_with_eps_after_the_bias_correction()
    {
        using var scope = NewDisposeScope();
        var p = new Parameter(tensor(new[] { 0.5f, -1.0f, 2.0f }));
        var g = new[] { 0.3, -0.02, 1.5 };
        var opt = new AdamW([("p", p)], beta1: 0.9, beta2: 0.99, eps: 0.25, weightDecay: 0.2);
        p.mul(tensor(g.Select(x => (float)x).ToArray())).sum().backward(); // dL/dp = g
        opt.StepWith(0.1);
        var got = p.data<float>().ToArray();
        double[] p0 = [0.5, -1.0, 2.0];
        for (int i = 0; i < 3; i++)
        {
            double want = p0[i] * (1 - 0.1 * 0.2) - 0.1 * g[i] / (Math.Abs(g[i]) + 0.25);
            Assert.Equal(want, got[i], 1e-6); // the moments are float32 by design
        }
        opt.Dispose();
    }

    [Fact]
    public void ZeroGrad_drops_gradients_and_a_parameter_without_one_is_not_stepped()
    {
        using var scope = NewDisposeScope();
        var (a, b) = Pair(4);
        var x = TestData.Randn([4, 7], 10);
        var opt = new AdamW([("a", a), ("b", b)], weightDecay: 0.1);
        Loss(a, b, x).backward();
        opt.ZeroGrad();
        Assert.Null(a.grad);
        Assert.Null(b.grad);
        // only a gets a gradient: b keeps its value (no decay, no moment update), as torch does with set_to_none
        var bBefore = b.detach().clone();
        x.matmul(a).sum().backward();
        Assert.Null(b.grad);
        opt.StepWith(0.01);
        Assert.True(b.allclose(bBefore, rtol: 0, atol: 0));
        Assert.False(a.grad is null);
        opt.Dispose();
    }

    /// <summary>Big parameters are updated slice by slice (<see cref="AdamW.SliceFrom"/>): every operation is
    /// elementwise, so the parameters, in float32 and in bf16 with a float32 master, come out bit for bit as from the
    /// whole-tensor update, uneven last slice included. The clip's slice-by-slice sum of squares agrees to rounding.
    /// </summary>
    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Slice_by_slice_update_is_bit_identical_to_the_whole_tensor_update(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        Parameter[] Make() => [new(TestData.Randn([37, 11], 5).to(dtype)), new(TestData.Randn([11], 6).to(dtype))];
        var (whole, sliced) = (Make(), Make());
        using var a = new AdamW([("w", whole[0]), ("b", whole[1])], weightDecay: 0.1);
        // 40 elements a slice: 3 rows of 11, so 12 slices of 3 and a last one of 1; the vector fits in one
        using var b = new AdamW([("w", sliced[0]), ("b", sliced[1])], weightDecay: 0.1)
        {
            SliceFrom = 1,
            Slice = 40,
            ClipSliceFrom = 1,
        };
        using var gen = new Generator(8);
        for (int step = 0; step < 3; step++)
        {
            for (int i = 0; i < 2; i++)
            {
                var g = randn(whole[i].shape, generator: gen).to(dtype);
                whole[i].grad = g.clone();
                sliced[i].grad = g.clone();
            }
            double na = a.ClipGradNorm(1.0),
                nb = b.ClipGradNorm(1.0);
            Assert.Equal(na, nb, na * 1e-6);
            // the same clipped gradients, so the update is compared alone
            for (int i = 0; i < 2; i++)
                sliced[i].grad = whole[i].grad!.clone();
            a.StepWith(0.05);
            b.StepWith(0.05);
            for (int i = 0; i < 2; i++)
                Assert.True(
                    whole[i].allclose(sliced[i], rtol: 0, atol: 0),
                    $"parameter {i} differs at step {step + 1}"
                );
        }
        Assert.False(whole[0].allclose(Make()[0], rtol: 0, atol: 0), "the parameters did not move");
    }

    /// <summary>Kept gradients (<see cref="AdamW.KeepGradsFrom"/>, large models' default for big parameters): the
    /// matrix (140 bytes in float32, 70 in bf16) keeps its gradient tensor, zeroed by ZeroGrad, and backward adds into
    /// it in place (after two accumulated backwards it is still the same tensor); the vector's is dropped. The
    /// parameters come out bit for bit as with every gradient dropped, over steps of two micro-batches each.</summary>
    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Kept_gradients_accumulate_in_place_and_train_bit_identically(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        Parameter[] Make() => [new(TestData.Randn([7, 5], 5).to(dtype)), new(TestData.Randn([5], 6).to(dtype))];
        var (dropped, keeping) = (Make(), Make());
        using var a = new AdamW([("a", dropped[0]), ("b", dropped[1])], weightDecay: 0.1);
        using var b = new AdamW([("a", keeping[0]), ("b", keeping[1])], weightDecay: 0.1) { KeepGradsFrom = 64 };
        Assert.Null(a.KeepGradsFrom); // a small model's default
        var xs = new[] { TestData.Randn([4, 7], 9).to(dtype), TestData.Randn([3, 7], 10).to(dtype) };
        Tensor? first = null;
        for (int step = 0; step < 3; step++)
        {
            a.ZeroGrad();
            b.ZeroGrad();
            Assert.Null(dropped[0].grad);
            Assert.Null(keeping[1].grad);
            var slot = keeping[0].grad!; // the kept tensor itself: an out-of-place sum would leave it at 0
            Assert.Equal(0, slot.count_nonzero().item<long>());
            first ??= slot;
            foreach (var x in xs)
            {
                Loss(dropped[0], dropped[1], x).backward();
                Loss(keeping[0], keeping[1], x).backward();
            }
            Assert.True(
                first.allclose(dropped[0].grad!, rtol: 0, atol: 0)
                    && keeping[0].grad!.allclose(dropped[0].grad!, rtol: 0, atol: 0),
                $"the matrix's gradient was not added into its kept tensor, or differs (step {step + 1})"
            );
            Assert.Equal(a.ClipGradNorm(0.5), b.ClipGradNorm(0.5));
            a.StepWith(0.05);
            b.StepWith(0.05);
            for (int i = 0; i < 2; i++)
                Assert.True(
                    dropped[i].allclose(keeping[i], rtol: 0, atol: 0),
                    $"parameter {i} differs at step {step + 1}"
                );
        }
        Assert.False(dropped[0].allclose(Make()[0], rtol: 0, atol: 0), "the parameters did not move");
    }

    [Fact]
    public void Dropping_all_gradients_frees_the_kept_ones_and_changes_no_step()
    {
        using var scope = NewDisposeScope();
        Parameter[] Make() => [new(TestData.Randn([7, 5], 5)), new(TestData.Randn([5], 6))];
        var (plain, dropping) = (Make(), Make());
        using var a = new AdamW([("a", plain[0]), ("b", plain[1])]) { KeepGradsFrom = 64 };
        using var b = new AdamW([("a", dropping[0]), ("b", dropping[1])]) { KeepGradsFrom = 64 };
        var x = TestData.Randn([4, 7], 9);
        for (int step = 0; step < 3; step++)
        {
            a.ZeroGrad();
            b.ZeroGrad();
            Assert.NotNull(dropping[0].grad); // made again after a drop
            Assert.Equal(0, dropping[0].grad!.count_nonzero().item<long>());
            Loss(plain[0], plain[1], x).backward();
            Loss(dropping[0], dropping[1], x).backward();
            a.StepWith(0.05);
            b.StepWith(0.05);
            b.DropAllGrads(); // as the trainers do before an evaluation
            Assert.All(dropping, p => Assert.Null(p.grad));
            for (int i = 0; i < 2; i++)
                Assert.True(plain[i].allclose(dropping[i], rtol: 0, atol: 0), $"parameter {i}, step {step + 1}");
        }
    }

    [Fact]
    public void Taken_gradients_keep_their_values_when_they_were_kept_ones()
    {
        // the joint trainer takes one loss's gradients, computes the other's, and puts the first back: a kept tensor
        // taken must not be zeroed by the ZeroGrad that follows
        using var scope = NewDisposeScope();
        Parameter[] ps = [new(TestData.Randn([7, 5], 5)), new(TestData.Randn([5], 6))];
        using var opt = new AdamW([("a", ps[0]), ("b", ps[1])]) { KeepGradsFrom = 64 };
        var x = TestData.Randn([4, 7], 9);
        opt.ZeroGrad();
        Loss(ps[0], ps[1], x).backward();
        var expected = ps[0].grad!.clone();
        var taken = opt.TakeGrads();
        Assert.True(taken[0]!.allclose(expected, rtol: 0, atol: 0), "the taken kept gradient was changed");
        Assert.Equal(0, ps[0].grad!.count_nonzero().item<long>()); // a fresh kept tensor, zeroed
        Loss(ps[0], ps[1], TestData.Randn([4, 7], 10)).backward();
        Assert.True(taken[0]!.allclose(expected, rtol: 0, atol: 0), "the next backward wrote into the taken one");
        opt.PutGrads(taken);
        Assert.True(ps[0].grad!.allclose(expected, rtol: 0, atol: 0));
    }
}
