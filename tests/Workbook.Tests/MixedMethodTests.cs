// Issue 14's mixed methods inside the GRPO stage: the SFT term (sft-anchored, CHORD-μ) and the off-policy expert
// (LUFFY). Each loss is checked against a hand computation in double from log-probabilities computed separately.
using Workbook.Data;
using Workbook.Experiments;
using Workbook.Model;
using Workbook.Training;
using Workbook.Verifiers;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class MixedMethodTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    static double[] D(Tensor t) => t.detach().cpu().to(ScalarType.Float64).data<double>().ToArray();

    static GrpoOptions Tiny(int maxCompletion = 8) =>
        new()
        {
            LearningRate = 1e-3,
            MaxSteps = 1,
            PerDeviceTrainBatchSize = 8,
            NumGenerations = 4,
            MaxCompletionLength = maxCompletion,
            ZeroSignalSteps = 0,
        };

    /// <summary>The token-mean NLL of the expert responses of <paramref name="ex"/>, from CompletionLogProbs on
    /// prompt | expert-completion rows (another code path than SftNll).</summary>
    double HandSftLoss(Qwen3ForCausalLM model, IReadOnlyList<Example> ex)
    {
        var prompts = ex.Select(fx.Codec.Prompt).ToList();
        var comps = ex.Select(e => GrpoBatch.ExpertCompletion(fx.Codec, e, 1024).Tokens).ToList();
        int P = prompts.Max(p => p.Length),
            C = comps.Max(c => c.Length);
        var (ids, mask) = PromptPadding.PromptCompletion(prompts, P, comps, C, fx.Codec.PadId);
        double[] lp;
        using (no_grad())
            lp = D(
                Losses
                    .CompletionLogProbs(model, tensor(ids, [ex.Count, P + C]), tensor(mask, [ex.Count, P + C]), P, 1.0)
                    .LogProbs
            );
        double nll = 0;
        int n = 0;
        for (int j = 0; j < ex.Count; j++)
        for (int t = 0; t < comps[j].Length; t++, n++)
            nll -= lp[j * C + t];
        return nll / n;
    }

    /// <summary>The GRPO loss of a batch by hand (dapo token mean): on-policy tokens −ρA (+ β·k3), ρ = 1 at μ = 1;
    /// expert tokens −A·f(π_θ), f = π or π/(π + γ), no KL.</summary>
    static double HandGrpoLoss(GrpoBatch b, double[] lp, GrpoOptions o)
    {
        var adv = D(b.Advantages);
        var cm = D(b.CompletionMask);
        var refLp = b.RefLogProbs is null ? null : D(b.RefLogProbs);
        long C = b.CompletionMask.shape[1];
        double sum = 0,
            tokens = 0;
        for (int j = 0; j < adv.Length; j++)
        for (int t = 0; t < C; t++)
        {
            int k = (int)(j * C + t);
            if (cm[k] == 0)
                continue;
            double per;
            if (b.OffPolicyRows.Length > 0 && b.OffPolicyRows[j])
            {
                double p = Math.Exp(lp[k]);
                per = -adv[j] * (o.OffPolicyShapingGamma is { } g ? p / (p + g) : p);
            }
            else
            {
                per = -adv[j];
                if (refLp is not null && o.Beta > 0)
                {
                    double d = refLp[k] - lp[k];
                    per += o.Beta * (Math.Exp(d) - d - 1);
                }
            }
            sum += per;
            tokens++;
        }
        return sum / tokens;
    }

    /// <summary>Trains one step and returns its logged metrics; also returns the batch and the SFT examples that step
    /// used, reproduced from an identical model (same seed, same rollout RNG and data orders).</summary>
    (Dictionary<string, double> Logged, double Grpo, double Sft) OneStep(GrpoOptions o)
    {
        var dir = TestData.TempDir();
        new GrpoTrainer(fx.NewModel(11), fx.Codec, fx.Task.Train, fx.Task.Reward, o, dir).Train();
        var logged = TrainerRuns.Comparable(dir).Single(r => r.ContainsKey("loss"));
        var twin = fx.NewModel(11);
        var train = fx.Task.Train;
        var batch = GrpoBatch.GenerateAndScore(
            twin,
            null,
            fx.Codec,
            train,
            train.Select(fx.Codec.Prompt).ToArray(),
            new WeightedReward([(fx.Task.Reward, 1.0)]),
            o,
            new DataOrder(train.Count, o.Seed),
            0
        );
        double[] lp;
        using (no_grad())
            lp = D(Losses.CompletionLogProbs(twin, batch.Ids, batch.Mask, batch.PromptLength, o.Temperature).LogProbs);
        var sftIdx = new DataOrder(train.Count, o.Seed + 1).Next(o.SftExamplesPerStep);
        return (logged, HandGrpoLoss(batch, lp, o), HandSftLoss(twin, sftIdx.Select(i => train[i]).ToList()));
    }

    [Fact]
    public void Sft_anchored_loss_is_grpo_plus_lambda_times_the_token_mean_expert_nll()
    {
        var o = Tiny() with { SftCoef = 0.7, SftBatchSize = 3 };
        var (m, grpo, sft) = OneStep(o);
        Assert.Equal(0.7, m["sft_coef"]);
        Assert.Equal(sft, m["sft_loss"], 5);
        Assert.Equal(grpo, m["grpo_loss"], 5);
        Assert.Equal(grpo + 0.7 * sft, m["loss"], 5);
        Assert.True(sft > 1, $"an untrained model's expert NLL is large (got {sft})");
    }

    [Fact]
    public void Chord_loss_is_the_convex_mix_with_mu_at_its_start()
    {
        var o = Tiny() with
        {
            MaxSteps = 1,
            SftCoef = 0.8,
            SftMix = "convex",
            SftCoefMin = 0.1,
            SftCoefSchedule = "cosine",
        };
        var (m, grpo, sft) = OneStep(o);
        Assert.Equal(0.8, m["sft_coef"]);
        Assert.Equal(sft, m["sft_loss"], 5);
        Assert.Equal(0.2 * grpo + 0.8 * sft, m["loss"], 5);
        // the SFT batch defaults to the prompts per step: 8 completions / 4 per prompt = 2 expert sequences
        Assert.Equal(2, o.SftExamplesPerStep);
    }

    [Fact]
    public void The_mu_schedule_goes_from_the_start_to_the_floor()
    {
        var o = new GrpoOptions
        {
            MaxSteps = 10,
            SftCoef = 1.0,
            SftCoefMin = 0.05,
            SftMix = "convex",
        };
        var cos = o with { SftCoefSchedule = "cosine" };
        var lin = o with { SftCoefSchedule = "linear" };
        for (int t = 0; t < 10; t++)
        {
            double p = t / 10.0;
            Assert.Equal(0.05 + 0.95 * 0.5 * (1 + Math.Cos(Math.PI * p)), cos.SftCoefAt(t), 12);
            Assert.Equal(0.05 + 0.95 * (1 - p), lin.SftCoefAt(t), 12);
        }
        Assert.Equal(1.0, cos.SftCoefAt(0), 12);
        Assert.Equal(0.525, cos.SftCoefAt(5), 12); // halfway: the mean of start and floor
        Assert.Equal(0.05, cos.SftCoefAt(10), 12);
        var constant = new GrpoOptions { MaxSteps = 10, SftCoef = 0.3 };
        Assert.All(Enumerable.Range(0, 10), t => Assert.Equal(0.3, constant.SftCoefAt(t)));
        Assert.Equal(0.0, new GrpoOptions { MaxSteps = 10 }.SftCoefAt(3));
    }

    [Fact]
    public void Luffy_puts_the_expert_response_last_in_every_group_and_normalises_over_the_mixed_group()
    {
        var o = Tiny(64) with { OffPolicyExpert = true, OffPolicyShapingGamma = 0.1, Beta = 0.05 };
        var model = fx.NewModel(12);
        var reference = fx.NewModel(13); // another policy, so the KL term is not zero on any token
        var train = fx.Task.Train;
        var order = new DataOrder(train.Count, o.Seed);
        var idx = new DataOrder(train.Count, o.Seed).Next(2);
        var batch = GrpoBatch.GenerateAndScore(
            model,
            reference,
            fx.Codec,
            train,
            train.Select(fx.Codec.Prompt).ToArray(),
            new WeightedReward([(fx.Task.Reward, 1.0)]),
            o,
            order,
            0
        );
        Assert.Equal(8, batch.Sequences);
        Assert.Equal(new[] { false, false, false, true, false, false, false, true }, batch.OffPolicyRows);
        var ids = batch.Ids.data<long>().ToArray();
        var cm = D(batch.CompletionMask);
        long L = batch.Ids.shape[1],
            C = batch.CompletionMask.shape[1];
        var expertRewards = new double[2];
        for (int g = 0; g < 2; g++)
        {
            var e = train[idx[g]];
            var expert = GrpoBatch.ExpertCompletion(fx.Codec, e, o.MaxCompletionLength);
            Assert.False(expert.Truncated);
            Assert.Equal(fx.Codec.EosId, expert.Tokens[^1]);
            int row = g * 4 + 3;
            for (int t = 0; t < expert.Tokens.Length; t++)
                Assert.Equal(expert.Tokens[t], ids[row * L + batch.PromptLength + t]);
            Assert.Equal(expert.Tokens.Length, cm.Skip((int)(row * C)).Take((int)C).Sum());
            expertRewards[g] =
                fx.Task.Reward.Score(e.PromptText, fx.Codec.Decode(expert.Tokens), e.Reference).Reward ?? 0;
            Assert.Equal(expertRewards[g], batch.Rewards[row]);
        }
        // advantages: (r − mean) / (std + 1e-4) over each group of 3 samples + the expert
        var adv = D(batch.Advantages);
        for (int g = 0; g < 2; g++)
        {
            var r = batch.Rewards.Skip(g * 4).Take(4).ToArray();
            double mean = r.Average(),
                std = Math.Sqrt(r.Sum(x => (x - mean) * (x - mean)) / 3);
            for (int i = 0; i < 4; i++)
                Assert.Equal((r[i] - mean) / (std + 1e-4), adv[g * 4 + i], 5);
        }
        Assert.Equal(expertRewards.Average(), batch.Metrics["off_policy/reward_mean"], 12);
        double onMean = new[] { 0, 1, 2, 4, 5, 6 }.Average(j => batch.Rewards[j]);
        Assert.Equal(onMean, batch.Metrics["reward"], 12);
        Assert.Equal(onMean, batch.Metrics["on_policy/reward_mean"], 12);

        // the loss: on-policy −A + β·k3, expert tokens −A·π/(π + γ) without KL (hand, in double)
        double[] lp;
        using (no_grad())
            lp = D(Losses.CompletionLogProbs(model, batch.Ids, batch.Mask, batch.PromptLength, 1.0).LogProbs);
        var acc = new GrpoBatch.Accumulator();
        var loss = batch.Loss(model, acc).Value();
        Assert.Equal(HandGrpoLoss(batch, lp, o), loss, 5);
        // the kl metric averages the on-policy tokens only
        var refLp = D(batch.RefLogProbs!);
        double klSum = 0,
            n = 0;
        for (int j = 0; j < 8; j++)
            if (!batch.OffPolicyRows[j])
                for (int t = 0; t < C; t++)
                    if (cm[j * C + t] > 0)
                    {
                        double d = refLp[j * C + t] - lp[j * C + t];
                        klSum += Math.Exp(d) - d - 1;
                        n++;
                    }
        Assert.Equal(klSum / n, acc.Means().Single(kv => kv.Item1 == "kl").Item2, 5);
    }

    [Theory]
    [InlineData(null)]
    [InlineData(0.1)]
    public void Expert_tokens_use_the_unclipped_ratio_pi_or_its_shaping(double? gamma)
    {
        // row 0 on-policy, row 1 the expert; π = 0.5 and 0.2 on the expert's tokens, A = −1 there: a clipped ratio
        // (PPO's min with clip(ρ, 0.8, 1.2)) would pin the loss at 0.8 and stop the gradient
        var lp = tensor(
            new double[,]
            {
                { -0.3, -0.6 },
                { Math.Log(0.5), Math.Log(0.2) },
            },
            requires_grad: true
        );
        var refLp = tensor(
            new double[,]
            {
                { -0.5, -0.4 },
                { -2.0, -3.0 },
            }
        );
        var adv = tensor(new double[] { 0.5, -1.0 });
        var o = new GrpoOptions
        {
            Beta = 0.1,
            OffPolicyExpert = true,
            OffPolicyShapingGamma = gamma,
        };
        var l = GrpoTrainer.Loss(
            lp,
            lp.detach(),
            refLp,
            adv,
            ones(2, 2, dtype: ScalarType.Float64),
            o,
            offPolicy: tensor(new double[] { 0, 1 })
        );
        l.Loss.backward();
        double F(double p) => gamma is { } g ? p / (p + g) : p;
        double dF(double p) => gamma is { } g ? g * p / ((p + g) * (p + g)) : p; // d f(e^lp) / d lp
        double K(double r, double x) => Math.Exp(r - x) - (r - x) - 1;
        double expected =
            (
                -0.5
                + 0.1 * K(-0.5, -0.3) // on-policy: −ρA + β·k3, ρ = 1
                - 0.5
                + 0.1 * K(-0.4, -0.6)
                + F(0.5) // expert: −A·f(π) with A = −1, no KL
                + F(0.2)
            ) / 4;
        Assert.Equal(expected, l.Loss.Value(), 12);
        var g = D(lp.grad!);
        Assert.Equal(dF(0.5) / 4, g[2], 12);
        Assert.Equal(dF(0.2) / 4, g[3], 12);
        Assert.Equal((-0.5 + 0.1 * (1 - Math.Exp(-0.5 + 0.3))) / 4, g[0], 12);
        Assert.Equal(0.0, D(l.Kl!)[2]);
        Assert.Equal(0.0, D(l.Kl!)[3]);
    }

    [Fact]
    public void The_grammar_tasks_expert_responses_fit_the_default_completion_budget()
    {
        // LUFFY places each expert response in its group cut at max_completion_length: the default must not cut them
        int budget = new ExperimentConfig().Grpo.MaxCompletionLength;
        var cut = fx.Task.Train.Count(e => GrpoBatch.ExpertCompletion(fx.Codec, e, budget).Truncated);
        Assert.Equal(0, cut);
    }

    [Theory]
    [InlineData("{\"sft_coef\": -1}", "sft_coef")]
    [InlineData("{\"sft_coef\": 0.5, \"sft_coef_min\": 0.6, \"sft_coef_schedule\": \"cosine\"}", "sft_coef_min")]
    [InlineData("{\"sft_coef\": 1, \"sft_coef_min\": 0.1}", "sft_coef_min")]
    [InlineData("{\"sft_mix\": \"convex\"}", "sft_mix")]
    [InlineData("{\"sft_coef\": 1, \"sft_mix\": \"blend\"}", "sft_mix")]
    [InlineData("{\"sft_coef\": 1.5, \"sft_mix\": \"convex\"}", "sft_coef")]
    [InlineData("{\"sft_coef\": 1, \"sft_coef_schedule\": \"exp\"}", "sft_coef_schedule")]
    [InlineData("{\"sft_coef_schedule\": \"cosine\"}", "sft_coef_schedule")]
    [InlineData("{\"sft_batch_size\": 4}", "sft_batch_size")]
    [InlineData("{\"sft_coef\": 1, \"sft_batch_size\": 0}", "sft_batch_size")]
    [InlineData("{\"sft_coef\": 1, \"sft_max_length\": 1}", "sft_max_length")]
    [InlineData("{\"off_policy_shaping_gamma\": 0.1}", "off_policy_shaping_gamma")]
    [InlineData("{\"off_policy_expert\": true, \"off_policy_shaping_gamma\": 0}", "off_policy_shaping_gamma")]
    [InlineData(
        "{\"off_policy_expert\": true, \"num_generations\": 1, \"per_device_train_batch_size\": 1}",
        "num_generations"
    )]
    public void Bad_mixing_options_are_clear_errors(string json, string field)
    {
        var p = Path.Combine(TestData.TempDir(), "grpo.json");
        File.WriteAllText(p, json);
        var e = Assert.Throws<WorkbookException>(() => TrainOptions.Load<GrpoOptions>(p));
        Assert.Contains($"option {field}", e.Message);
    }

    [Fact]
    public void Good_mixing_options_load()
    {
        var p = Path.Combine(TestData.TempDir(), "grpo.json");
        File.WriteAllText(p, "{\"sft_coef\": 1, \"sft_mix\": \"convex\", \"sft_coef_min\": 0.05}");
        var o = TrainOptions.Load<GrpoOptions>(p, ["sft_coef_schedule=cosine", "off_policy_expert=true"]);
        Assert.Equal(
            (1.0, "convex", 0.05, "cosine", true),
            (o.SftCoef, o.SftMix, o.SftCoefMin, o.SftCoefSchedule, o.OffPolicyExpert)
        );
        Assert.Null(o.OffPolicyShapingGamma);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_mixed_stage_killed_midway_and_resumed_ends_with_the_same_weights(bool luffy)
    {
        var o = Tiny() with
        {
            MaxSteps = 6,
            SaveSteps = 3,
            NumIterations = 2,
            Beta = 0.02,
            SftCoef = luffy ? 0.5 : 0.9,
            SftMix = luffy ? "add" : "convex",
            SftCoefMin = luffy ? 0 : 0.1,
            SftCoefSchedule = luffy ? "constant" : "cosine",
            SftBatchSize = 3,
            OffPolicyExpert = luffy,
            OffPolicyShapingGamma = luffy ? 0.1 : null,
            MaxCompletionLength = luffy ? 40 : 8,
        };
        Qwen3ForCausalLM Run(string dir, bool resume, long? stopAt)
        {
            var model = fx.NewModel(14);
            var tr = new GrpoTrainer(model, fx.Codec, fx.Task.Train, fx.Task.Reward, o, dir);
            if (stopAt is { } s)
                tr.CrashAfter(s);
            tr.Train(resume);
            return model;
        }
        string full = TestData.TempDir(),
            broken = TestData.TempDir();
        var a = Run(full, false, null);
        Assert.Throws<OperationCanceledException>(() => Run(broken, false, 4)); // last checkpoint: step 3
        Assert.Equal("step-000003", Path.GetFileName(TrainerCheckpoint.Latest(broken)));
        var b = Run(broken, true, null);
        var pa = a.named_parameters().ToList();
        var pb = b.named_parameters().ToList();
        Assert.Equal(pa.Count, pb.Count);
        for (int i = 0; i < pa.Count; i++)
            Assert.True(pa[i].parameter.eq(pb[i].parameter).all().item<bool>(), $"{pa[i].name} differs after resuming");
        var ma = TrainerRuns.Comparable(full);
        var mb = TrainerRuns.Comparable(broken);
        Assert.Equal(ma.Count, mb.Count);
        for (int i = 0; i < ma.Count; i++)
            foreach (var k in ma[i].Keys)
                Assert.True(ma[i][k] == mb[i][k], $"line {i} {k}: {ma[i][k]} vs {mb[i][k]}");
        // the logged coefficient follows the schedule step by step, and the weights moved
        var coefs = ma.Where(r => r.ContainsKey("sft_coef")).Select(r => r["sft_coef"]).ToList();
        Assert.Equal(Enumerable.Range(0, 6).Select(t => o.SftCoefAt(t)), coefs);
        Assert.False(pa[0].parameter.eq(fx.NewModel(14).named_parameters().First().parameter).all().item<bool>());
        if (luffy)
            Assert.All(ma.Where(r => r.ContainsKey("loss")), r => Assert.Contains("off_policy/reward_mean", r.Keys));
    }

    [Fact]
    public void The_methods_pipelines_set_their_mixing_on_top_of_the_configs_grpo()
    {
        var cfg = ExperimentConfig.Load(null);
        var anchored = ExperimentRunner.MethodOptions(cfg, "sft-anchored");
        Assert.Equal(
            (1.0, "add", "constant", false),
            (anchored.SftCoef, anchored.SftMix, anchored.SftCoefSchedule, anchored.OffPolicyExpert)
        );
        var chord = ExperimentRunner.MethodOptions(cfg, "chord");
        Assert.Equal(
            (1.0, "convex", 0.05, "cosine"),
            (chord.SftCoef, chord.SftMix, chord.SftCoefMin, chord.SftCoefSchedule)
        );
        var luffy = ExperimentRunner.MethodOptions(cfg, "luffy");
        Assert.Equal((true, 0.1, 0.0), (luffy.OffPolicyExpert, luffy.OffPolicyShapingGamma, luffy.SftCoef));
        foreach (var o in new[] { anchored, chord, luffy })
        {
            o.Validate();
            Assert.Equal(
                (cfg.Grpo.Beta, cfg.Grpo.LearningRate, cfg.Grpo.MaxSteps),
                (o.Beta, o.LearningRate, o.MaxSteps)
            );
        }
        // the baselines' GRPO stays plain
        Assert.Equal((0.0, false), (cfg.Grpo.SftCoef, cfg.Grpo.OffPolicyExpert));
        var tuned = ExperimentConfig.Load(
            null,
            ["anchor_sft_coef=0.25", "chord_mu_floor=0", "luffy_shaping_gamma=null"]
        );
        Assert.Equal(0.25, ExperimentRunner.MethodOptions(tuned, "sft-anchored").SftCoef);
        Assert.Equal(0.0, ExperimentRunner.MethodOptions(tuned, "chord").SftCoefMin);
        Assert.Null(ExperimentRunner.MethodOptions(tuned, "luffy").OffPolicyShapingGamma);
        Assert.Equal(cfg.Guarded.StopWhen, ExperimentRunner.MethodOptions(cfg, "guarded").StopWhen);
        Assert.Contains(
            "not a mixed method",
            Assert.Throws<WorkbookException>(() => ExperimentRunner.MethodOptions(cfg, "joint")).Message
        );
    }

    [Theory]
    [InlineData("anchor_sft_coef=0", "anchor_sft_coef")]
    [InlineData("chord_mu_start=1.5", "chord_mu_start")]
    [InlineData("chord_mu_floor=0.9", "chord_mu_floor")]
    [InlineData("chord_mu_schedule=exp", "chord_mu_schedule")]
    [InlineData("chord_mu_schedule=constant", "chord_mu_floor")]
    [InlineData("luffy_shaping_gamma=-1", "luffy_shaping_gamma")]
    [InlineData("grpo.sft_coef=0.5", "grpo.sft_")]
    [InlineData("grpo.off_policy_expert=true", "grpo.sft_*/off_policy_")]
    public void Bad_method_keys_are_clear_errors(string set, string key)
    {
        var over = set.StartsWith("chord_mu_floor") ? new[] { "chord_mu_start=0.5", set } : new[] { set };
        var e = Assert.Throws<WorkbookException>(() => ExperimentConfig.Load(null, over));
        Assert.Contains($"option {key}", e.Message);
    }
}
