using System.Text.Json.Nodes;
using Workbook.Data;
using Workbook.Experiments;
using Workbook.Model;
using Workbook.Reports;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Tests;

/// <summary>Issue 14 §4: KL from the stage's start, entropy, the other task's loss (Training/Forgetting.cs).</summary>
public class ForgettingTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    const int V = 4,
        Eos = 3;

    /// <summary>A float64 Qwen3 over 4 tokens whose logits are far from uniform: an untied output layer, scaled (tied
    /// and scaled embeddings would make every model repeat its last token).</summary>
    static Qwen3ForCausalLM Small(long seed)
    {
        var m = new Qwen3ForCausalLM(
            Qwen3Config.Tiny(V) with
            {
                TieWordEmbeddings = false,
            },
            ScalarType.Float64,
            CPU,
            seed
        );
        using (no_grad())
        using (TorchSharp.Scalar thirty = 30)
            foreach (var (name, p) in m.named_parameters())
                if (name.Contains("lm_head"))
                    p.mul_(thirty);
        m.eval();
        return m;
    }

    /// <summary>The next-token distribution after <paramref name="prefix"/>, from one unpadded forward (the hand
    /// computation: no batching, no padding).</summary>
    static double[] Next(Qwen3ForCausalLM m, int[] prefix)
    {
        using var _ = no_grad();
        var ids = tensor(prefix.Select(x => (long)x).ToArray(), [1, prefix.Length]);
        var logits = m.Forward(ids, ones_like(ids));
        return logits[0, prefix.Length - 1].softmax(-1).data<double>().ToArray();
    }

    /// <summary>Every completion of at most 2 tokens that generation can produce (stop at EOS, else cut at
    /// 2).</summary>
    static List<int[]> AllCompletions()
    {
        var all = new List<int[]> { new[] { Eos } };
        for (int a = 0; a < V; a++)
            if (a != Eos)
                for (int b = 0; b < V; b++)
                    all.Add([a, b]);
        return all;
    }

    static double SeqProb(Qwen3ForCausalLM m, int[] prompt, int[] y)
    {
        double p = 1;
        for (int t = 0; t < y.Length; t++)
            p *= Next(m, [.. prompt, .. y[..t]])[y[t]];
        return p;
    }

    [Fact]
    public void Kl_from_start_is_exact_against_an_enumeration_of_every_completion()
    {
        using var p0 = Small(1);
        using var p1 = Small(2);
        int[] prompt = [0, 1, 2];
        var ys = AllCompletions();
        Assert.Equal(1.0, ys.Sum(y => SeqProb(p0, prompt, y)), 10);
        // exact sequence-level KL(p0 ‖ p1) by enumeration
        double exact = ys.Sum(y =>
        {
            double a = SeqProb(p0, prompt, y),
                b = SeqProb(p1, prompt, y);
            return a * Math.Log(a / b);
        });
        var (perSeq, tokens) = Forgetting.Kl(p0, p1, ys.Select(_ => prompt).ToList(), ys, padId: 0, temperature: 1.0);
        Assert.Equal(ys.Select(y => y.Length), tokens);
        // E_{y~p0}[Σ_t KL_t] is the sequence KL (chain rule), so the estimator's enumerated mean equals it
        double viaPositions = ys.Select((y, i) => SeqProb(p0, prompt, y) * perSeq[i]).Sum();
        Assert.True(exact > 0.05, $"the two models should differ (KL {exact})");
        Assert.Equal(exact, viaPositions, 9);
    }

    [Fact]
    public void Kl_and_entropy_per_completion_match_a_hand_computation_with_padding_and_temperature()
    {
        using var p0 = Small(3);
        using var p1 = Small(4);
        // prompts of different lengths (left padding) and completions of different lengths (right padding)
        var prompts = new List<int[]> { new[] { 0, 1, 2 }, new[] { 2 }, new[] { 1, 1 } };
        var completions = new List<int[]> { new[] { 1, 0, Eos }, new[] { Eos }, new[] { 2, 2 } };
        const double T = 0.7;
        double[] Tempered(double[] p)
        {
            var w = p.Select(x => Math.Pow(x, 1 / T)).ToArray();
            return w.Select(x => x / w.Sum()).ToArray();
        }
        var (kl, _) = Forgetting.Kl(p0, p1, prompts, completions, padId: 0, temperature: T);
        // a budget of 16 bytes: one row per batch, and a completion of more than one token in chunks of one position
        var (chunked, _) = Forgetting.Kl(p0, p1, prompts, completions, 0, T, 32, null, logProbBytes: 16);
        var (h, _) = Forgetting.Entropy(p1, prompts, completions, padId: 0, temperature: T);
        for (int i = 0; i < prompts.Count; i++)
        {
            double k = 0,
                e = 0;
            for (int t = 0; t < completions[i].Length; t++)
            {
                int[] prefix = [.. prompts[i], .. completions[i][..t]];
                var a = Tempered(Next(p0, prefix));
                var b = Tempered(Next(p1, prefix));
                k += a.Select((x, v) => x * Math.Log(x / b[v])).Sum();
                e -= b.Select(x => x * Math.Log(x)).Sum();
            }
            Assert.Equal(k, kl[i], 9);
            Assert.Equal(k, chunked[i], 9);
            Assert.Equal(e, h[i], 9);
        }
        Assert.True(kl.All(x => x > 0));
    }

    Evaluator NewEvaluator() =>
        new(fx.Codec, fx.Task.Eval.Take(8).ToList(), fx.Task.EvalVerifiers, new EvalOptions { MaxNewTokens = 8 });

    ITrainer Trainer(string kind, string dir, Evaluator ev, long? stopAt = null)
    {
        TrainOptions options =
            kind == "sft"
                ? new SftOptions
                {
                    LearningRate = 3e-3,
                    MaxSteps = 12,
                    PerDeviceTrainBatchSize = 8,
                    SaveSteps = 5,
                    EvalSteps = 4,
                }
                : new GrpoOptions
                {
                    LearningRate = 3e-3,
                    MaxSteps = 12,
                    PerDeviceTrainBatchSize = 16,
                    NumGenerations = 4,
                    MaxCompletionLength = 8,
                    SaveSteps = 5,
                    EvalSteps = 4,
                    Beta = 0.04,
                    ZeroSignalSteps = 0,
                };
        // GRPO's reward: one an untrained model's groups disagree on, so it moves
        var tr = Trainers.Create(
            options,
            fx.NewModel(5),
            fx.Codec,
            fx.Task.Train,
            new TrainingTests.LengthReward(),
            dir,
            ev
        );
        if (stopAt is { } s)
            tr.CrashAfter(s);
        return tr;
    }

    static List<(long Step, Dictionary<string, double> M)> Evals(string dir) =>
        ExperimentRunner.EvalPoints(dir).Select(p => (p.Step, p.Metrics)).ToList();

    [Theory]
    [InlineData("sft")]
    [InlineData("grpo")]
    public void Kl_from_start_is_zero_at_the_start_grows_and_a_resumed_stage_logs_the_same_values(string kind)
    {
        var ev = NewEvaluator();
        var full = TestData.TempDir();
        Trainer(kind, full, ev).Train();
        var a = Evals(full);
        Assert.Equal([0L, 4, 8, 12], a.Select(x => x.Step));
        Assert.Equal(0.0, a[0].M["eval_kl_from_start"], 12);
        Assert.Equal(0.0, a[0].M["eval_kl_from_start_per_token"], 12);
        Assert.True(a[^1].M["eval_kl_from_start"] > 1e-4, $"KL at the end {a[^1].M["eval_kl_from_start"]}");
        Assert.True(a.All(x => x.M["eval_entropy"] > 0 && x.M["eval_entropy_per_response"] > 0));
        // GRPO with β > 0 reuses its reference (the start model): the snapshot stores no second copy of the weights
        var startDir = Path.Combine(full, StageStart.Folder);
        Assert.True(File.Exists(Path.Combine(startDir, StageStart.SamplesFile)));
        Assert.Equal(kind == "sft", File.Exists(Path.Combine(startDir, Checkpoint.WeightsFile)));

        var broken = TestData.TempDir();
        Assert.Throws<OperationCanceledException>(() => Trainer(kind, broken, ev, stopAt: 10).Train());
        Assert.Equal("step-000010", Path.GetFileName(TrainerCheckpoint.Latest(broken)));
        // resumed at step 10 from a model that is not p_start: the KL must still be from the stage's start
        Trainer(kind, broken, ev).Train(resume: true);
        var b = Evals(broken);
        Assert.Equal(a.Select(x => x.Step), b.Select(x => x.Step));
        for (int i = 0; i < a.Count; i++)
            foreach (var k in new[] { "eval_kl_from_start", "eval_kl_from_start_per_token", "eval_entropy" })
                Assert.True(a[i].M[k] == b[i].M[k], $"step {a[i].Step} {k}: {a[i].M[k]} vs {b[i].M[k]}");
    }

    [Fact]
    public void The_start_evaluation_scores_the_snapshot_samples_so_rewards_are_unchanged()
    {
        // the stage's first evaluation uses p_start's snapshot samples; they are the evaluator's own samples
        var ev = NewEvaluator();
        using var model = fx.NewModel(7);
        var own = ev.Sample(model).Select(c => c.Tokens).ToList();
        var dir = TestData.TempDir();
        var start = StageStart.Prepare(dir, model, 0, null, ev)!;
        Assert.Equal(own, start.Completions);
        var plain = ev.Run(model);
        var withStart = ev.Run(model, start: start, atStart: true);
        foreach (var (k, v) in plain)
            Assert.True(withStart[k] == v, $"{k}: {v} vs {withStart[k]}");
        // at the start the KL is 0 without a forward (nothing kept yet); computed, it is 0 exactly on the CPU
        Assert.Equal(0.0, withStart["eval_kl_from_start"]);
        Assert.Equal(0, start.KeptLogProbBatches);
        var computed = ev.KlFromStart(model, start);
        Assert.True(start.KeptLogProbBatches > 0);
        Assert.Equal(0.0, computed["eval_kl_from_start"]);
        Assert.Equal(0.0, computed["eval_kl_from_start_per_token"]);
        // a stage resumed past step 0 without a snapshot logs no KL rather than one from the wrong policy
        Assert.Null(StageStart.Prepare(TestData.TempDir(), model, 3, null, ev));
    }

    [Fact]
    public void The_start_log_probabilities_are_kept_once_and_give_the_kl_computed_afresh()
    {
        var ev = NewEvaluator();
        using var p0 = fx.NewModel(7);
        using var p1 = fx.NewModel(8);
        var dir = TestData.TempDir();
        using var start = StageStart.Prepare(dir, p0, 0, null, ev)!;
        var first = ev.KlFromStart(p1, start);
        Assert.True(start.KeptLogProbBatches > 0);
        // later evaluations read the kept values: with the weights on disk gone they still give the same KL
        File.Delete(Path.Combine(dir, StageStart.Folder, Checkpoint.WeightsFile));
        var again = ev.KlFromStart(p1, start);
        var (fresh, tokens) = Forgetting.Kl(p0, p1, ev.Prompts, start.Completions, fx.Codec.PadId, 1.0, 64);
        foreach (var m in new[] { first, again })
        {
            Assert.Equal(fresh.Average(), m["eval_kl_from_start"]);
            Assert.Equal(fresh.Sum() / tokens.Sum(), m["eval_kl_from_start_per_token"]);
        }
        Assert.True(fresh.Average() > 1e-3);
        start.Dispose();
        Assert.Equal(0, start.KeptLogProbBatches);
    }

    [Fact]
    public void Entropies_recorded_while_sampling_match_a_forward_pass_over_the_samples()
    {
        // eval_entropy comes from the sampling loop (no second forward); it must be the quantity Forgetting.Entropy
        // computes over the same completions, within the float rounding of the cached decode
        var ev = NewEvaluator();
        using var model = fx.NewModel(11);
        var drawn = ev.Sample(model);
        var (h, tokens) = Forgetting.Entropy(
            model,
            ev.Prompts,
            drawn.Select(c => c.Tokens).ToList(),
            fx.Codec.PadId,
            1.0
        );
        for (int i = 0; i < drawn.Count; i++)
        {
            Assert.Equal(drawn[i].Tokens.Length, drawn[i].Entropies!.Length);
            Assert.True(Math.Abs(drawn[i].Entropies!.Sum() - h[i]) <= 1e-5 * Math.Max(1, h[i]), $"{i}: {h[i]}");
        }
        var m = ev.Run(model);
        Assert.Equal(h.Sum() / tokens.Sum(), m["eval_entropy"], 5);
        Assert.Equal(h.Average(), m["eval_entropy_per_response"], 4);
        Assert.True(h.Average() > 0.1);
    }

    [Fact]
    public void Evaluation_generations_keep_their_KV_cache_within_the_budget()
    {
        // closed form at Qwen3-0.6B: 28 layers × keys and values × 8 KV heads × 128 × 4 bytes per position and row
        Assert.Equal(28L * 2 * 8 * 128 * 4, KVCache.Bytes(Qwen3Config.Qwen3_0_6B, ScalarType.Float32, 1, 1));
        Assert.Equal(
            3 * 100 * KVCache.Bytes(Qwen3Config.Qwen3_0_6B, ScalarType.BFloat16, 1, 1),
            KVCache.Bytes(Qwen3Config.Qwen3_0_6B, ScalarType.BFloat16, 3, 100)
        );
        var examples = fx.Task.Eval.Take(8).ToList();
        using var model = fx.NewModel(9);
        long longest = examples.Max(e => fx.Codec.Prompt(e).Length) + 4;
        long perRow = KVCache.Bytes(model.Config, model.DType, 1, longest);
        Evaluator Make(long bytes) =>
            new(
                fx.Codec,
                examples,
                fx.Task.EvalVerifiers,
                new EvalOptions { MaxNewTokens = 4, GenerationCacheBytes = bytes }
            );
        Assert.Equal(64, Make(1L << 30).GenerationRows(model, 64)); // a compact model: the whole batch, as before
        Assert.Equal(3, Make(3 * perRow + perRow / 2).GenerationRows(model, 64));
        Assert.Equal(1, Make(1).GenerationRows(model, 64)); // never fewer than one
        // three rows per call: every prompt gets its completion, and the same seed draws the same ones
        var bounded = Make(3 * perRow);
        var a = bounded.Sample(model).Select(c => c.Tokens).ToList();
        Assert.Equal(examples.Count, a.Count);
        Assert.All(a, t => Assert.InRange(t.Length, 1, 4));
        Assert.Equal(a, bounded.Sample(model).Select(c => c.Tokens).ToList());
    }

    [Fact]
    public void The_loss_split_by_form_and_span_adds_up_to_the_loss_per_response()
    {
        // eval_sft_nll/<form>/<span> comes from the same forward as the loss: per form, rationale + answer, weighted
        // by the form's responses, is the loss per response
        var examples = fx.Task.Eval.Take(16).ToList();
        var ev = new Evaluator(fx.Codec, examples, fx.Task.EvalVerifiers, new EvalOptions { MaxNewTokens = 4 });
        using var model = fx.NewModel(9);
        var m = ev.Run(model, lossOnly: true);
        var forms = examples.GroupBy(e => e.Form).ToList();
        Assert.True(forms.Count == 2, "the fixture's held-out examples have both forms");
        double total = forms.Sum(g =>
            g.Count() * (m[$"eval_sft_nll/{g.Key}/rationale"] + m[$"eval_sft_nll/{g.Key}/answer"])
        );
        double perResponse = m["eval_sft_nll_per_response"];
        Assert.True(
            Math.Abs(perResponse - total / examples.Count) <= 1e-5 * perResponse,
            $"{perResponse} vs {total / examples.Count}"
        );
        Assert.True(forms.All(g => m[$"eval_sft_nll/{g.Key}/answer"] > 0 && m[$"eval_sft_nll/{g.Key}/rationale"] > 0));
    }

    [Theory]
    [InlineData("forgetting_task=\"chess\"", "option forgetting_task")]
    [InlineData("forgetting_task_fraction=0", "option forgetting_task_fraction")]
    [InlineData("forgetting_task_fraction=1", "option forgetting_task_fraction")]
    [InlineData("forgetting_task_fraction=-0.2", "option forgetting_task_fraction")]
    [InlineData("forgetting_task=\"grammar\"", "the dataset itself")]
    public void Bad_forgetting_options_are_refused_with_the_option_named(string set, string expect)
    {
        var e = Assert.Throws<WorkbookException>(() => ExperimentConfig.Load(null, [set]));
        Assert.Contains(expect, e.Message);
    }

    [Fact]
    public void Forgetting_task_is_for_the_embedded_tasks()
    {
        var e = Assert.Throws<WorkbookException>(() =>
            ExperimentConfig.Load(null, ["dataset=\"cola:/data/in_domain_train.tsv\"", "forgetting_task=\"other\""])
        );
        Assert.Contains("option forgetting_task", e.Message);
        Assert.Contains("embedded", e.Message);
        Assert.Equal("arithmetic", ExperimentConfig.Load(null, ["forgetting_task=\"other\""]).OtherTask());
        Assert.Equal(
            "grammar",
            ExperimentConfig.Load(null, ["dataset=\"arithmetic\"", "forgetting_task=\"other\""]).OtherTask()
        );
        Assert.Null(new ExperimentConfig().OtherTask());
    }

    [Fact]
    public void The_default_config_keeps_its_vocabulary_and_base_cache_key()
    {
        var root = TestData.TempDir();
        var dflt = new ExperimentRunner(new ExperimentConfig(), Path.Combine(root, "a"), root);
        // 52eecad2d6a6: the base cache folder the main job used before forgetting_task existed (runs/.cache/base);
        // base models trained with the fused norm kernels (another computation in the last bits) have their own
        using (FusedKernels.Suspend())
            Assert.Equal("52eecad2d6a6", dflt.BaseCacheHash());
        if (FusedKernels.Enabled) // named by the kernel library's version and hash, so a rebuilt kernel is another
            Assert.NotEqual("52eecad2d6a6", dflt.BaseCacheHash());
        Assert.Equal(dflt.BaseCacheHash(), dflt.BaseCacheHash());
        Assert.Equal(260, dflt.Codec.Vocab.Size);
        Assert.Same(dflt.Task.Base, dflt.BaseData());

        var other = new ExperimentRunner(
            ExperimentConfig.Load(null, ["forgetting_task=\"other\""]),
            Path.Combine(root, "b"),
            root
        );
        Assert.NotEqual("52eecad2d6a6", other.BaseCacheHash());
        Assert.Superset(dflt.Codec.Vocab.QwenIds.ToHashSet(), other.Codec.Vocab.QwenIds.ToHashSet());
        Assert.True(other.Codec.Vocab.Size > dflt.Codec.Vocab.Size);
        var mix = other.BaseData();
        Assert.Equal(dflt.Task.Base.Count, mix.Count);
        Assert.Equal(0.25, mix.Count(e => e.Source == "arithmetic") / (double)mix.Count, 3);
        // and the fraction enters the key
        var other2 = new ExperimentRunner(
            ExperimentConfig.Load(null, ["forgetting_task=\"other\"", "forgetting_task_fraction=0.5"]),
            Path.Combine(root, "c"),
            root
        );
        Assert.NotEqual(other.BaseCacheHash(), other2.BaseCacheHash());
    }

    [Fact]
    public void A_pipeline_with_forgetting_task_logs_the_other_tasks_loss_and_summarises_forgetting()
    {
        var root = TestData.TempDir();
        var runDir = Path.Combine(root, "run");
        var cfg = ExperimentTests.Tiny with { ForgettingTask = "other", Seeds = 2, EvalsPerStage = 2 };
        var runner = new ExperimentRunner(cfg, runDir, root);
        var (summary, report) = runner.RunAndReport(["sft-then-rl"]);
        var p = summary["pipelines"]!["sft-then-rl"]!;
        foreach (
            var k in new[]
            {
                "kl_from_start_change_during_rl",
                "entropy_change_during_rl",
                "other_task_sft_loss_change_during_rl",
            }
        )
            Assert.NotNull(p[k]);
        var pts = summary["forgetting"]!["points"]!["sft-then-rl"]!.AsArray();
        Assert.Equal(2 * 2, pts.Count); // 2 seeds × 2 evaluations after the RL stage's first
        Assert.Equal(runner.SeedList.Order(), pts.Select(x => x!["seed"]!.GetValue<long>()).Distinct().Order());
        Assert.All(pts, x => Assert.NotNull(x!["other_task_sft_loss"]));
        var html = File.ReadAllText(report);
        Assert.Contains("Forgetting while it happens", html);
        Assert.Contains("seed " + runner.SeedList[0], html);
    }

    [Fact]
    public void Pearson_and_its_fisher_interval_match_a_hand_computation()
    {
        // x = 1..5, y = 2, 4, 5, 4, 5: r = 6 / sqrt(10 · 6) = 0.7746
        var (r, lo, hi, n) = ForgettingSummary.Pearson([1, 2, 3, 4, 5], [2, 4, 5, 4, 5]);
        Assert.Equal(5, n);
        Assert.Equal(6 / Math.Sqrt(60), r, 10);
        double z = Math.Atanh(r),
            h = 1.959964 / Math.Sqrt(2);
        Assert.Equal(Math.Tanh(z - h), lo, 10);
        Assert.Equal(Math.Tanh(z + h), hi, 10);
        Assert.True(double.IsNaN(ForgettingSummary.Pearson([1, 2, 3], [1, 2, 4]).Lo));
        // two points always lie on a line: r would be ±1 by construction, so it is not reported
        Assert.True(double.IsNaN(ForgettingSummary.Pearson([1, 2], [5, 3]).R));
        Assert.Equal(-1, ForgettingSummary.Pearson([1, 2, 3], [5, 3, 1]).R, 12);
        // a pair with a non-finite value is left out, and so from the count: of four pairs, two are finite
        var skip = ForgettingSummary.Pearson([1, 2, double.NaN, 4], [2, 1, 3, double.PositiveInfinity]);
        Assert.Equal(2, skip.N);
        Assert.True(double.IsNaN(skip.R));
    }

    /// <summary>An evaluation of a GRPO stage (stage 1) with the two metrics the correlation reads.</summary>
    static EvalPoint At(long step, double rise, double kl) =>
        new(step, 1, "grpo", new() { [ForgettingSummary.Rise] = rise, [ForgettingSummary.Kl] = kl });

    [Fact]
    public void A_correlation_from_under_three_evaluations_is_called_undefined_not_printed_as_plus_or_minus_one()
    {
        // one GRPO stage per seed: its start and one or two evaluations after it
        var results = new Dictionary<string, List<SeedResult>>
        {
            ["guarded"] =
            [
                new SeedResult(1000, [], [At(0, 1, 0), At(4, 1.5, 2)], null),
                new SeedResult(1002, [], [At(0, 1, 0), At(4, 1.2, 1)], null),
            ],
            ["sft-then-rl"] =
            [
                new SeedResult(1000, [], [At(0, 1, 0), At(4, 1.1, 1), At(8, 1.3, 3), At(12, 1.2, 4)], null),
                new SeedResult(1001, [], [At(0, 1, 0), At(4, 1.2, 1)], null),
            ],
        };
        var statements = new JsonObject();
        var json = ForgettingSummary.Build(results, statements)!;
        var text = statements["forgetting"]!.GetValue<string>();
        Assert.Contains("guarded: undefined (2 evaluations of 2 seeds; a correlation needs at least 3)", text);
        Assert.DoesNotContain("NaN", text);
        Assert.Null(json["kl_vs_sft_loss_rise_correlation"]!["guarded"]!["r"]);
        // 4 points pooled give an r; the seed with one evaluation says so instead of a number, and one seed with an r
        // gives no interval across seeds
        Assert.Matches(@"sft-then-rl: r = 0\.\d\d \(95% CI \[", text);
        Assert.Contains("1001: undefined (1 evaluation))", text);
        Assert.Null(json["kl_vs_sft_loss_rise_correlation"]!["sft-then-rl"]!["across_seeds"]);
        Assert.EndsWith("no pipeline has an r in two seeds, so there is no interval across seeds.", text);
    }

    [Fact]
    public void The_interval_across_seeds_is_the_bounded_t_interval_of_the_per_seed_correlations()
    {
        // per seed r: 1 (collinear), 0.5 (x 1,2,3 against y 1,3,2) and -0.5
        var results = new Dictionary<string, List<SeedResult>>
        {
            ["chord"] =
            [
                new SeedResult(1, [], [At(0, 0, 0), At(4, 1, 1), At(8, 2, 2), At(12, 3, 3)], null),
                new SeedResult(2, [], [At(0, 0, 0), At(4, 1, 1), At(8, 2, 3), At(12, 3, 2)], null),
                new SeedResult(3, [], [At(0, 0, 0), At(4, 1, 3), At(8, 2, 1), At(12, 3, 2)], null),
            ],
        };
        var statements = new JsonObject();
        var corr = ForgettingSummary.Build(results, statements)!["kl_vs_sft_loss_rise_correlation"]!["chord"]!;
        var expected = Stat.Bounded([1, 0.5, -0.5], -1, 1);
        var across = corr["across_seeds"]!;
        Assert.Equal(expected.Mean, across["mean"]!.GetValue<double>(), 6);
        Assert.Equal(expected.Ci95[0], across["ci95"]![0]!.GetValue<double>(), 6);
        Assert.Equal(expected.Ci95[1], across["ci95"]![1]!.GetValue<double>(), 6);
        Assert.True(expected.Ci95[0] >= -1 && expected.Ci95[1] <= 1);
        Assert.Equal([1, 0.5, -0.5], corr["per_seed_r"]!.AsObject().Select(kv => kv.Value!.GetValue<double>()));
        Assert.Matches(
            @"across seeds 0\.33, 95% CI \[-?\d\.\d\d, \d\.\d\d\] over 3 seeds\)",
            statements["forgetting"]!.GetValue<string>()
        );
        Assert.EndsWith("t interval kept inside [-1, 1]).", statements["forgetting"]!.GetValue<string>());
    }
}
