using Workbook.Data;
using Workbook.Theory;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Tests;

/// <summary>The pieces that make a result a test of the theory: the KL-in-reward fixed point, the C1
/// predictor.</summary>
public class EvidenceTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    static readonly double[] RefProbs = [0.4, 0.25, 0.2, 0.1, 0.05];
    static readonly double[] Rewards = [0, 1, 0, 1, 0.5];

    /// <summary>Exact-expectation GRPO on a softmax bandit through GrpoTrainer.Loss: each arm is one one-token
    /// completion, weighted by π (the completion mask carries the weights, so the token mean is E_π); the advantages
    /// are the exact ones of the option's kl_mode and scale_rewards. Returns π after plain gradient descent.</summary>
    static double[] Iterate(GrpoOptions o, int steps, double lr)
    {
        var logRef = tensor(RefProbs.Select(p => Math.Log(p)).ToArray(), ScalarType.Float64).unsqueeze(1);
        var theta = logRef.squeeze(1).clone().requires_grad_(true);
        var r = tensor(Rewards, ScalarType.Float64);
        using TorchSharp.Scalar eps = 1e-4; // held: see HeldScalars
        for (int it = 0; it < steps; it++)
        {
            using var scope = NewDisposeScope();
            var logp = theta.log_softmax(0);
            var pi = logp.exp().detach();
            Tensor shaped = o.KlMode == "reward" ? r - (logp.detach() - logRef.squeeze(1)).Times(o.Beta) : r;
            var mean = (pi * shaped).sum();
            var adv = shaped - mean;
            if (o.ScaleRewards != "none")
                adv = adv / (pi * adv * adv).sum().sqrt().Plus(eps);
            var lp = logp.unsqueeze(1);
            var loss = GrpoTrainer.Loss(lp, lp.detach(), logRef, adv, pi.unsqueeze(1), o).Loss;
            var g = autograd.grad([loss], [theta])[0];
            using (no_grad())
                theta.sub_(g.Times(lr));
        }
        using var _ = no_grad();
        return theta.softmax(0).data<double>().ToArray();
    }

    static double[] Tilted(double beta)
    {
        var w = RefProbs.Select((p, i) => p * Math.Exp(Rewards[i] / beta)).ToArray();
        return w.Select(x => x / w.Sum()).ToArray();
    }

    static double TotalVariation(double[] a, double[] b) => 0.5 * a.Zip(b, (x, y) => Math.Abs(x - y)).Sum();

    [Theory]
    [InlineData(0.25)]
    [InlineData(1.0)]
    public void Kl_in_the_reward_converges_to_the_tilted_optimum(double beta)
    {
        var o = new GrpoOptions
        {
            Beta = beta,
            KlMode = "reward",
            ScaleRewards = "none",
            LossType = "dapo",
        };
        var pi = Iterate(o, 4000, 2.0);
        Assert.True(TotalVariation(pi, Tilted(beta)) <= 1e-3, $"TV {TotalVariation(pi, Tilted(beta))}");
    }

    [Fact]
    public void Kl_in_the_loss_with_group_scaling_does_not_reach_the_tilted_optimum()
    {
        var o = new GrpoOptions
        {
            Beta = 0.25,
            KlMode = "loss",
            ScaleRewards = "group",
            LossType = "dapo",
        };
        var pi = Iterate(o, 4000, 2.0);
        Assert.True(TotalVariation(pi, Tilted(0.25)) > 1e-2, $"TV {TotalVariation(pi, Tilted(0.25))}");
    }

    [Fact]
    public void Kl_in_the_reward_subtracts_beta_times_the_sequence_log_ratio()
    {
        using var model = fx.NewModel(21, ScalarType.Float64);
        using var reference = fx.NewModel(22, ScalarType.Float64);
        var o = new GrpoOptions
        {
            PerDeviceTrainBatchSize = 8,
            NumGenerations = 4,
            MaxCompletionLength = 6,
            Beta = 0.3,
            KlMode = "reward",
            ScaleRewards = "none",
            Seed = 5,
        };
        var prompts = fx.Task.Train.Take(10).ToList();
        var batch = GrpoBatch.GenerateAndScore(
            model,
            reference,
            fx.Codec,
            prompts,
            prompts.Select(fx.Codec.Prompt).ToArray(),
            new Verifiers.WeightedReward([(fx.Task.Reward, 1.0)]),
            o,
            new DataOrder(prompts.Count, 5),
            0
        );
        using var _ = no_grad();
        var lp = Losses.CompletionLogProbs(model, batch.Ids, batch.Mask, batch.PromptLength, 1.0).LogProbs;
        var rf = Losses.CompletionLogProbs(reference, batch.Ids, batch.Mask, batch.PromptLength, 1.0).LogProbs;
        var real = batch.Mask.narrow(1, batch.PromptLength, lp.shape[1]).to(ScalarType.Float64);
        var ratio = ((lp - rf) * real).sum(1).data<double>().ToArray();
        for (int j = 0; j < ratio.Length; j++)
            Assert.Equal(batch.Rewards[j] - 0.3 * ratio[j], batch.ShapedRewards[j], 8);
        Assert.Contains(ratio, x => Math.Abs(x) > 1e-3); // the two models differ, so the penalty is not trivially 0
        // advantages are the shaped rewards minus their group mean (scale_rewards = none)
        var adv = batch.Advantages.to(ScalarType.Float64).data<double>().ToArray();
        for (int g = 0; g < 2; g++)
        {
            double m = batch.ShapedRewards.Skip(4 * g).Take(4).Average();
            for (int i = 0; i < 4; i++)
                Assert.Equal(batch.ShapedRewards[4 * g + i] - m, adv[4 * g + i], 5);
        }
    }

    [Theory]
    [InlineData("beta=0", "needs beta > 0")]
    [InlineData("scale_rewards=\"group\"", "scale_rewards = none")]
    [InlineData("loss_type=\"grpo\"", "loss_type")]
    [InlineData("kl_mode=\"sequence\"", "is not loss or reward")]
    public void Kl_mode_reward_refuses_settings_that_move_its_optimum(string set, string expect)
    {
        var sets = new List<string> { "kl_mode=\"reward\"", "beta=0.5", "scale_rewards=\"none\"" };
        if (set.StartsWith("kl_mode"))
            sets[0] = set;
        else
            sets.Add(set);
        var e = Assert.Throws<WorkbookException>(() => TrainOptions.Load<GrpoOptions>(null, sets));
        Assert.Contains(expect, e.Message);
    }

    [Fact]
    public void The_predicted_rise_equals_the_exact_loss_change_at_the_tilted_optimum()
    {
        // enumerable policies: 6 prompts, 4 responses, 0/1 reward; reference ≠ data (the identity holds for any
        // reference)
        var rng = new Random(7);
        double[] Dist()
        {
            var w = Enumerable.Range(0, 4).Select(_ => rng.NextDouble() + 0.05).ToArray();
            return w.Select(x => x / w.Sum()).ToArray();
        }
        var pData = Enumerable.Range(0, 6).Select(_ => Dist()).ToArray();
        var pRef = Enumerable.Range(0, 6).Select(_ => Dist()).ToArray();
        var r = Enumerable.Range(0, 6).Select(_ => new double[] { 1, 0, rng.Next(2), 0 }).ToArray();
        foreach (var beta in new[] { 0.25, 0.5, 1.0, 2.0 })
        {
            double exact = C1Predictor.Exact(pData, pRef, r, beta);
            // the formula with the exact P(r=1|x) and E_{p_data} r, through the per-prompt log Z
            double logZ = Enumerable
                .Range(0, 6)
                .Average(x => C1Predictor.LogZ(pRef[x].Where((_, y) => r[x][y] == 1).Sum(), beta));
            double dataR = Enumerable.Range(0, 6).Average(x => pData[x].Select((p, y) => p * r[x][y]).Sum());
            Assert.Equal(exact, logZ - dataR / beta, 10);
        }
        // and through FromCounts when P is a multiple of 1/k
        var counts = new[] { 0, 4, 8, 12, 16, 10 };
        var pred = C1Predictor.FromCounts(counts, 16, 0.5, 0.6, "test");
        Assert.Equal(counts.Average(s => C1Predictor.LogZ(s / 16.0, 0.5)) - 0.6 / 0.5, pred.PlugIn!.Value, 12);
        // the prediction is the plug-in less the bootstrap's bias estimate, which Jensen makes negative
        Assert.Equal(pred.PlugIn!.Value - pred.JensenBias!.Value, pred.Mean, 12);
        Assert.True(pred.JensenBias < 0);
        Assert.True(pred.Ci95[0] <= pred.Mean && pred.Mean <= pred.Ci95[1]);
    }

    [Theory]
    [InlineData(0.25)]
    [InlineData(0.5)]
    [InlineData(1.0)]
    public void The_plug_in_estimate_with_16_samples_is_nearly_unbiased_where_it_is_used(double beta)
    {
        // Jensen makes it biased low; for P ≥ 0.3 the bias stays under 5% of log Z (worst here: 3.1% at β 0.5, P 0.3)
        // binomial enumeration of E[log(1 + P̂(e^{1/β} − 1))] with P̂ = S/16, S ~ Bin(16, P), against the exact value
        foreach (var p in new[] { 0.3, 0.5, 0.65, 0.8, 0.95 })
        {
            double expect = 0;
            for (int s = 0; s <= 16; s++)
                expect += Binomial(16, s) * Math.Pow(p, s) * Math.Pow(1 - p, 16 - s) * C1Predictor.LogZ(s / 16.0, beta);
            Assert.True(
                expect <= C1Predictor.LogZ(p, beta)
                    && C1Predictor.LogZ(p, beta) - expect <= 0.05 * C1Predictor.LogZ(p, beta),
                $"β {beta}, P {p}: bias {expect - C1Predictor.LogZ(p, beta)}"
            );
        }
    }

    [Fact]
    public void Where_P_is_often_small_the_basic_interval_covers_the_truth_and_the_percentile_one_does_not()
    {
        // 128 prompts, P drawn from {0.03, 0.1, 0.3, 0.6, 0.9}, β 0.25, k 16 (the sweep's tested point has SFT
        // policies like this): the plug-in is biased low by about 0.14 nats, the percentile interval sits below it
        var rng = new Random(5);
        double[] levels = [0.03, 0.1, 0.3, 0.6, 0.9];
        int reps = 100,
            basic = 0,
            percentile = 0;
        double errPlugIn = 0,
            errCorrected = 0;
        for (int k = 0; k < reps; k++)
        {
            var P = Enumerable.Range(0, 128).Select(_ => levels[rng.Next(levels.Length)]).ToArray();
            double truth = P.Average(p => C1Predictor.LogZ(p, 0.25)) - 0.65 / 0.25;
            var counts = P.Select(p => Enumerable.Range(0, 16).Count(_ => rng.NextDouble() < p)).ToArray();
            var pred = C1Predictor.FromCounts(counts, 16, 0.25, 0.65, "test", bootstrap: 400, seed: k);
            if (pred.Ci95[0] <= truth && truth <= pred.Ci95[1])
                basic++;
            // the percentile interval, reflected back from the basic one about the plug-in
            double plug = pred.PlugIn!.Value;
            if (2 * plug - pred.Ci95[1] <= truth && truth <= 2 * plug - pred.Ci95[0])
                percentile++;
            errPlugIn += plug - truth;
            errCorrected += pred.Mean - truth;
        }
        Assert.InRange(basic / (double)reps, 0.85, 1.0);
        Assert.InRange(percentile / (double)reps, 0.0, 0.75);
        // the bias correction removes most of the plug-in's mean error
        Assert.True(errPlugIn / reps < -0.08, $"plug-in mean error {errPlugIn / reps}");
        Assert.True(Math.Abs(errCorrected / reps) < 0.5 * Math.Abs(errPlugIn / reps), $"{errCorrected / reps}");
    }

    static double Binomial(int n, int k) => Enumerable.Range(1, k).Aggregate(1.0, (a, i) => a * (n - k + i) / i);

    [Fact]
    public void The_bootstrap_interval_covers_the_true_prediction()
    {
        // 48 prompts with known P, 16 samples each: the 95% interval should cover the truth in about 95% of
        // replications
        var rng = new Random(11);
        var P = Enumerable.Range(0, 48).Select(i => 0.35 + 0.6 * (i % 7) / 6.0).ToArray();
        double truth = P.Average(p => C1Predictor.LogZ(p, 0.5)) - 0.65 / 0.5;
        int covered = 0,
            reps = 200;
        for (int k = 0; k < reps; k++)
        {
            var counts = P.Select(p => Enumerable.Range(0, 16).Count(_ => rng.NextDouble() < p)).ToArray();
            var pred = C1Predictor.FromCounts(counts, 16, 0.5, 0.65, "test", bootstrap: 400, seed: k);
            if (pred.Ci95[0] <= truth && truth <= pred.Ci95[1])
                covered++;
        }
        Assert.InRange(covered / (double)reps, 0.88, 1.0);
    }
}

public class ZeroSignalTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    sealed class ConstantReward : Verifiers.IVerifier
    {
        public string Name => "constant";

        public Verifiers.VerifierResult Score(string prompt, string completion, string reference) => new(0, null, true);
    }

    GrpoOptions Options =>
        new()
        {
            LearningRate = 1e-3,
            MaxSteps = 4,
            PerDeviceTrainBatchSize = 8,
            NumGenerations = 4,
            MaxCompletionLength = 6,
            ZeroSignalSteps = 3,
            Beta = 0.04,
        };

    [Fact]
    public void A_stage_whose_groups_all_tie_stops_with_a_clear_error()
    {
        var dir = TestData.TempDir();
        var tr = new GrpoTrainer(fx.NewModel(3), fx.Codec, fx.Task.Train, new ConstantReward(), Options, dir);
        var e = Assert.Throws<NoRewardSignalException>(() => tr.Train());
        Assert.Contains("no reward signal", e.Message);
        Assert.Contains("first 3 GRPO steps", e.Message);
        // it stopped at the third step, not later
        Assert.Equal(3, MetricsLog.Read(Path.Combine(dir, "metrics.jsonl")).Count(r => r.ContainsKey("reward")) + 1);
    }

    [Fact]
    public void A_reward_that_varies_within_groups_trains_to_the_end()
    {
        var dir = TestData.TempDir();
        var state = new GrpoTrainer(
            fx.NewModel(3),
            fx.Codec,
            fx.Task.Train,
            new TrainingTests.LengthReward(),
            Options,
            dir
        ).Train();
        Assert.Equal(4, state.Step);
    }

    [Fact]
    public void Zero_means_never_check()
    {
        var dir = TestData.TempDir();
        var state = new GrpoTrainer(
            fx.NewModel(3),
            fx.Codec,
            fx.Task.Train,
            new ConstantReward(),
            Options with
            {
                ZeroSignalSteps = 0,
            },
            dir
        ).Train();
        Assert.Equal(4, state.Step);
    }
}
