// Model/CheckpointedLayer.cs (gradient_checkpointing): inside ForBackward each decoder layer runs again in the
// backward; the gradients equal the plain ones bit for bit (the same kernels on the same inputs), alone and with the
// in-place lookup and tied head, over padded rows and packed segments; it is really built (no saved activations
// between layers); a failure in its backward is thrown when the scope closes; and the option's default follows the
// model's size.
using Workbook.Model;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class CheckpointingTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    static readonly long[] Ids = [5, 9, 5, 2, 41, 9, 9, 3, 7, 1, 12, 60];

    static Qwen3ForCausalLM Model(ScalarType dtype) =>
        new(Qwen3Config.Tiny(64) with { NumHiddenLayers = 3 }, dtype, CPU, seed: 3);

    static Tensor Loss(Qwen3ForCausalLM m, int shift, bool packed)
    {
        var ids = tensor(Ids.Select(i => (i + shift) % 64).ToArray(), [2, 6]);
        var mask = tensor(new long[] { 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 }, [2, 6]); // a left-padded row
        var logits = packed
            ? m.Logits(
                m.HiddenStates(ids, segmentIds: tensor(new long[] { 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1 }, [2, 6]))
            )
            : m.Forward(ids, mask);
        return nn.functional.cross_entropy(logits.reshape(-1, 64), ids.roll(1, 1).reshape(-1));
    }

    /// <summary>Every parameter's gradient after two accumulated backward passes inside ForBackward.</summary>
    static Tensor[] Grads(Qwen3ForCausalLM m, bool checkpoint, bool packed)
    {
        m.GradientCheckpointing = checkpoint;
        foreach (var p in m.parameters())
            p.grad = null;
        for (int shift = 0; shift < 2; shift++) // the second pass adds into existing gradients
        {
            using var scope = NewDisposeScope();
            using var mode = m.ForBackward();
            Loss(m, shift, packed).backward();
        }
        return m.parameters().Select(p => p.grad!.clone()).ToArray();
    }

    [Theory]
    [InlineData(ScalarType.Float64, false, false)]
    [InlineData(ScalarType.Float32, false, false)]
    [InlineData(ScalarType.Float32, true, false)] // with the in-place lookup and tied head of big embeddings
    [InlineData(ScalarType.Float32, false, true)] // packed rows: the segment mask is saved and read again
    public void Checkpointed_gradients_equal_the_plain_ones(ScalarType dtype, bool inPlaceHead, bool packed)
    {
        using var scope = NewDisposeScope();
        using var m = Model(dtype);
        if (inPlaceHead)
            m.LookupIntoGradFrom = 0;
        var plain = Grads(m, checkpoint: false, packed);
        var checkpointed = Grads(m, checkpoint: true, packed);
        Assert.Equal(plain.Length, checkpointed.Length);
        static double Max(Tensor t) => t.abs().max().to(ScalarType.Float64).item<double>();
        for (int i = 0; i < plain.Length; i++)
            Assert.True(
                plain[i].eq(checkpointed[i]).all().item<bool>(),
                $"gradient {i} differs by {Max(plain[i] - checkpointed[i])}"
            );
        Assert.All(plain, g => Assert.True(Max(g) > 0)); // every parameter gets a gradient
    }

    /// <summary>Really built: a checkpointed forward's output hangs on the layers' own nodes, so the first layer's
    /// parameters get no gradient from autograd.grad (the reentrant backward writes .grad; autograd.grad sees no
    /// path), while outside ForBackward they do.</summary>
    [Fact]
    public void Checkpointing_applies_only_inside_ForBackward()
    {
        using var scope = NewDisposeScope();
        using var m = Model(ScalarType.Float64);
        m.GradientCheckpointing = true;
        var w = m.model.layers[0].mlp.up_proj.weight!;
        Tensor? GradOfW(bool mode)
        {
            using var _ = mode ? m.ForBackward() : null;
            return autograd.grad([Loss(m, 0, false)], [w], allow_unused: true)[0];
        }
        Assert.True(GradOfW(false) is { IsInvalid: false } g && g.abs().max().item<double>() > 0);
        var inside = GradOfW(true);
        Assert.True(inside is null || inside.IsInvalid, "inside ForBackward the layer should be checkpointed");
    }

    [Fact]
    public void A_failure_in_a_checkpointed_backward_is_thrown_when_the_scope_closes()
    {
        using var scope = NewDisposeScope();
        using var m = Model(ScalarType.Float32);
        m.GradientCheckpointing = true;
        m.BeforeCheckpointBackward = () => throw new OutOfMemoryException("injected");
        var mode = m.ForBackward();
        Loss(m, 0, false).backward(); // the process survives: nothing crossed libtorch's engine
        var e = Assert.Throws<WorkbookException>(mode.Dispose);
        Assert.Contains("checkpointed layer", e.Message);
        Assert.Contains("injected", e.Message);
        m.BeforeCheckpointBackward = null;
        using (m.ForBackward()) // the error was reported once; the next backward is clean
            Loss(m, 0, false).backward();
    }

    [Fact]
    public void The_default_is_on_from_100M_parameters_and_an_explicit_value_is_honoured()
    {
        var o = new SftOptions();
        Assert.False(o.CheckpointingFor(5_000_000));
        Assert.True(o.CheckpointingFor(596_049_920));
        Assert.True((o with { GradientCheckpointing = true }).CheckpointingFor(5_000_000));
        Assert.False((o with { GradientCheckpointing = false }).CheckpointingFor(596_049_920));
    }

    [Fact]
    public void A_trainer_sets_the_models_checkpointing_from_its_options_and_trains_the_same()
    {
        List<Dictionary<string, double>> Run(bool? checkpoint, out bool set)
        {
            var dir = TestData.TempDir();
            var model = fx.NewModel(6);
            var o = new SftOptions
            {
                MaxSteps = 2,
                PerDeviceTrainBatchSize = 4,
                LearningRate = 1e-3,
                GradientCheckpointing = checkpoint,
            };
            new SftTrainer(model, fx.Codec, fx.Task.Train.Take(32).ToList(), o, dir).Train();
            set = model.GradientCheckpointing;
            return TrainerRuns.Comparable(dir);
        }
        var plain = Run(null, out var setPlain);
        var checkpointed = Run(true, out var setCheckpointed);
        Assert.False(setPlain); // a tiny model's default
        Assert.True(setCheckpointed);
        Assert.Equal(plain.Count, checkpointed.Count);
        for (int i = 0; i < plain.Count; i++)
            foreach (var k in plain[i].Keys.Where(k => k is "loss" or "grad_norm" or "mean_token_accuracy"))
                Assert.Equal(plain[i][k], checkpointed[i][k]);
    }

    [Fact]
    public void The_joint_trainer_refuses_a_nested_gradient_checkpointing()
    {
        var e = Assert.Throws<WorkbookException>(() =>
            TrainOptions.Load<JointOptions>(null, ["grpo.gradient_checkpointing=true"])
        );
        Assert.Contains("grpo.gradient_checkpointing", e.Message);
    }
}
