// The joint trainer's GRPO term with its own AdamW (rl_optimizer = separate, issue 11): the SFT path is untouched by
// it, each term moves the weights at its own rate (AdamW's first step moves a weight by lr·g/(|g| + ε), so by about lr
// per term), bf16 weights keep both terms' updates, its schedule counts RL steps, a killed run resumes exactly, and
// bad options are refused by name.
using Workbook.Experiments;
using Workbook.Model;
using Workbook.Training;
using Workbook.Verifiers;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class JointTrainerTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    static JointOptions Options(string mode, double sftLr, double rlLr, int steps, int rlEvery, double weight = 1) =>
        new()
        {
            LearningRate = sftLr,
            MaxSteps = steps,
            Seed = 3,
            RlWeight = weight,
            RlEvery = rlEvery,
            RlOptimizer = mode,
            LrSchedulerType = "constant",
            Sft = new SftOptions { PerDeviceTrainBatchSize = 4 },
            Grpo = new GrpoOptions
            {
                LearningRate = rlLr,
                LrSchedulerType = "constant",
                PerDeviceTrainBatchSize = 8,
                NumGenerations = 4,
                MaxCompletionLength = 3,
                Beta = 0.04,
            },
        };

    /// <summary>Trains and returns the weights (float64 copies) and the run folder. The coin reward gives every
    /// group reward variance, so the GRPO term has a gradient from the first step.</summary>
    (Dictionary<string, Tensor> W, string Dir) Run(JointOptions o, ScalarType dtype = ScalarType.Float64)
    {
        var dir = TestData.TempDir();
        using var model = fx.NewModel(7, dtype);
        new JointTrainer(model, fx.Codec, fx.Task.Train, new CoinReward(), o, dir).Train();
        return (Weights(model), dir);
    }

    static Dictionary<string, Tensor> Weights(Qwen3ForCausalLM m) =>
        m.named_parameters().ToDictionary(x => x.name, x => x.parameter.detach().to(ScalarType.Float64).clone());

    static double MaxAbsChange(Dictionary<string, Tensor> a, Dictionary<string, Tensor> b) =>
        a.Keys.Max(k => (a[k] - b[k]).abs().max().item<double>());

    [Fact]
    public void With_a_vanishing_grpo_rate_the_sft_term_trains_as_if_alone()
    {
        // shared with λ = 0 is SFT alone on the same batches; separate at a negligible GRPO rate must match it
        var alone = Run(Options("shared", 1e-3, 1e-3, steps: 3, rlEvery: 1, weight: 0));
        var separate = Run(Options("separate", 1e-3, 1e-300, steps: 3, rlEvery: 1));
        var shared = Run(Options("shared", 1e-3, 1e-3, steps: 3, rlEvery: 1));
        Assert.True(MaxAbsChange(alone.W, separate.W) < 1e-12);
        Assert.True(MaxAbsChange(alone.W, shared.W) > 1e-5); // the test can fail: the GRPO term has a gradient
    }

    [Fact]
    public void Each_term_moves_the_weights_at_its_own_rate_on_the_first_step()
    {
        // AdamW's first step: Δw = −lr·g/(|g| + ε) per term. Separate: |Δw| ≤ lr_sft + lr_rl, reached where both
        // gradients agree in sign. Shared: one AdamW on g_sft + g_rl, so |Δw| ≤ lr_sft.
        const double sftLr = 1e-3,
            rlLr = 2e-4;
        var w0 = new Dictionary<string, Tensor>();
        using (var m = fx.NewModel(7, ScalarType.Float64))
            w0 = Weights(m);
        var separate = Run(Options("separate", sftLr, rlLr, steps: 1, rlEvery: 1)).W;
        var shared = Run(Options("shared", sftLr, rlLr, steps: 1, rlEvery: 1)).W;
        double sepMax = MaxAbsChange(separate, w0),
            sharedMax = MaxAbsChange(shared, w0);
        // 1e-6: AdamW keeps a float32 master copy of non-float32 weights, so a float64 weight lands rounded to float32
        Assert.InRange(sepMax, sftLr + 0.9 * rlLr, sftLr + rlLr + 1e-6);
        Assert.InRange(sharedMax, 0.9 * sftLr, sftLr + 1e-6);
        // and the weights that moved by more than lr_sft are many: both terms reach most weights
        using TorchSharp.Scalar bound = sftLr * 1.05;
        long above = separate.Keys.Sum(k => ((separate[k] - w0[k]).abs() > bound).sum().item<long>());
        Assert.True(above > 100, $"{above} weights moved by more than lr_sft");
    }

    [Fact]
    public void In_bf16_the_grpo_step_keeps_the_sft_terms_update()
    {
        // both AdamWs write their float32 master copy into the bf16 weight, the GRPO term's last: with a master copy of
        // its own (at a rate too small to move it) it would write back the start's weights and erase the SFT update
        var w0 = new Dictionary<string, Tensor>();
        using (var m = fx.NewModel(7, ScalarType.BFloat16))
            w0 = Weights(m);
        var w = Run(Options("separate", 1e-2, 1e-12, steps: 1, rlEvery: 1), ScalarType.BFloat16).W;
        Assert.InRange(MaxAbsChange(w, w0), 0.005, 0.02);
    }

    [Fact]
    public void The_grpo_terms_schedule_counts_rl_steps_and_a_killed_run_resumes_exactly()
    {
        var o = Options("separate", 1e-3, 1e-3, steps: 6, rlEvery: 2) with
        {
            SaveSteps = 3, // not a multiple of rl_every: the resumed RL prompt order must count steps 0 and 2
            Grpo = Options("separate", 1e-3, 1e-3, 6, 2).Grpo with { LrSchedulerType = "cosine" },
        };
        var whole = Run(o);
        var lines = MetricsLog.Read(Path.Combine(whole.Dir, "metrics.jsonl"));
        var rlLrs = lines
            .Where(l => l.ContainsKey("grpo_learning_rate"))
            .Select(l => ((long)l["step"]!, (double)l["grpo_learning_rate"]!))
            .ToList();
        // RL at steps 0, 2, 4 (logged 1, 3, 5): cosine over 3 RL steps
        Assert.Equal([1L, 3L, 5L], rlLrs.Select(x => x.Item1));
        for (int k = 0; k < 3; k++)
            Assert.Equal(1e-3 * 0.5 * (1 + Math.Cos(Math.PI * k / 3.0)), rlLrs[k].Item2, 15);
        Assert.All(lines.Where(l => l.ContainsKey("sft_loss")), l => Assert.Equal(1e-3, (double)l["learning_rate"]!));

        var dir = TestData.TempDir();
        using (var m = fx.NewModel(7, ScalarType.Float64))
            Assert.Throws<OperationCanceledException>(() =>
                new JointTrainer(m, fx.Codec, fx.Task.Train, new CoinReward(), o, dir).CrashAfter(3).Train()
            );
        Assert.True(File.Exists(Path.Combine(dir, "checkpoints", "step-000003", JointTrainer.RlOptimizerFile)));
        using var resumed = fx.NewModel(99, ScalarType.Float64); // other weights: the checkpoint must supply them
        new JointTrainer(resumed, fx.Codec, fx.Task.Train, new CoinReward(), o, dir).Train(resume: true);
        Assert.Equal(0, MaxAbsChange(whole.W, Weights(resumed)));
        var a = TrainerRuns.Comparable(whole.Dir);
        var b = TrainerRuns.Comparable(dir);
        Assert.Equal(a.Count, b.Count);
        for (int i = 0; i < a.Count; i++)
            foreach (var k in a[i].Keys)
                Assert.True(a[i][k] == b[i][k], $"line {i} {k}: {a[i][k]} vs {b[i][k]}");
    }

    [Fact]
    public void Bad_joint_options_are_refused_by_name()
    {
        var bad = Options("both", 1e-3, 1e-3, 1, 1);
        Assert.Contains("rl_optimizer", Assert.Throws<WorkbookException>(bad.Validate).Message);
        var weighted = Options("separate", 1e-3, 1e-3, 1, 1, weight: 0.5);
        Assert.Contains("rl_weight", Assert.Throws<WorkbookException>(weighted.Validate).Message);
        Options("shared", 1e-3, 1e-3, 1, 1, weight: 0.5).Validate();

        var e = Assert.Throws<WorkbookException>(() => ExperimentConfig.Load(null, ["joint_rl_optimizer=both"]));
        Assert.Contains("joint_rl_optimizer", e.Message);
        e = Assert.Throws<WorkbookException>(() => ExperimentConfig.Load(null, ["joint_rl_weight=2"]));
        Assert.Contains("joint_rl_weight", e.Message);
        var cfg = ExperimentConfig.Load(null, ["joint_rl_optimizer=shared", "joint_rl_weight=2"]);
        var j = cfg.JointStageOptions(steps: 240, seed: 1, evalEvery: 60);
        Assert.Equal(("shared", 2.0), (j.RlOptimizer, j.RlWeight));
        var d = ExperimentConfig.Load(null, []).JointStageOptions(steps: 240, seed: 1, evalEvery: 60);
        Assert.Equal(("separate", 40L), (d.RlOptimizer, d.RlSteps));
    }
}
