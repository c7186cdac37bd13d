// Dose-response of the coupling: SFT then RL over a grid of β and loose_format_fraction, RL with kl_mode = reward
// (whose optimum is Theorem 3.1's p*) run to a plateau, and the measured SFT-loss rise set against the predicted one.
//  1. per (fraction, seed): one SFT stage from the base model on that fraction's expert data (shared by every β);
//  2. from the SFT policy: the prediction (Theory/C1Prediction.cs) with the stage's β and its CI;
//  3. per (β, fraction, seed): RL to the budget, measured ΔL_SFT (nats per response) on held-out expert data; the
//     reward reached against E_{p*} r tells a run that has not converged from a prediction that missed;
//  4. the twin, RL then SFT: SFT again after RL; the strict reward should return to the expert data's own reward,
//     predicted as E_{p_data} r × label accuracy (the lenient reward of the same evaluation).
// Every stage folder resumes like `run`; a finished point is never repeated.
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Workbook.Theory;
using Workbook.Training;

namespace Workbook.Experiments;

/// <param name="Null">where the coin-reward null runs (RL from the same SFT policy with a fair coin as the reward,
/// whose optimum is the reference: Theorem 3.1 predicts 0, so what it measures is RL's own drift): all points, tested
/// (those whose prediction is ≥ 0.1 nats per response), or none.</param>
/// <param name="StepsBeta">When set, the RL budget grows as β falls: grpo.max_steps is the budget at this β and a
/// point at β runs round(max_steps · (StepsBeta / β)^StepsPower) steps. Null: every β gets max_steps.</param>
/// <param name="StepsPower">The exponent of that scaling. 1 is what plain gradient ascent needs near p* (the objective
/// curves as β times the policy's Fisher metric); AdamW's steps have a fixed size instead, and p* lies further
/// from the reference as β falls, so more can be needed: the sweep's convergence check measures it.</param>
public sealed record SweepGrid(
    IReadOnlyList<double> Betas,
    IReadOnlyList<double> LooseFormatFractions,
    bool Twin = true,
    string Null = "all",
    double? StepsBeta = null,
    double StepsPower = 1
)
{
    /// <summary>The RL steps a point at <paramref name="beta"/> runs when the config's budget is
    /// <paramref name="maxSteps"/>.</summary>
    public int RlSteps(int maxSteps, double beta) =>
        StepsBeta is { } b ? Math.Max(1, (int)Math.Round(maxSteps * Math.Pow(b / beta, StepsPower))) : maxSteps;

    public static readonly string[] NullModes = ["all", "tested", "none"];

    public static readonly double[] DefaultBetas = [0.25, 0.5, 1, 2];
    public static readonly double[] DefaultFractions = [0.35, 0];

    /// <summary>Parses "0.25,0.5,1" for an option; empty, non-numeric, non-finite or out-of-range values are
    /// errors.</summary>
    public static double[] ParseList(string option, string text, double min, double max, bool minExclusive)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length == 0 || parts.All(p => p.Length == 0))
            throw new WorkbookException($"{option}: the list is empty");
        var values = new List<double>();
        foreach (var p in parts)
        {
            if (!double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !double.IsFinite(v))
                throw new WorkbookException($"{option}: '{p}' is not a number");
            if (v < min || v > max || (minExclusive && v == min))
                throw new WorkbookException($"{option}: {p} is outside {(minExclusive ? "(" : "[")}{min}, {max}]");
            values.Add(v);
        }
        return values.Distinct().ToArray();
    }
}

public static class Sweep
{
    static string Key(double x) => Summary.Short(x);

    /// <summary>Where a sweep's config starts, below its file and --set: the main job's defaults with a short RL
    /// budget (80 steps at 5e-4; configs/sweep-converged.json has the converged one).</summary>
    public static ExperimentConfig Start
    {
        get
        {
            var c = new ExperimentConfig();
            return c with { Grpo = c.Grpo with { MaxSteps = 80, LearningRate = 5e-4 } };
        }
    }

    /// <summary>The RL options of the sweep: the config's GRPO with the KL in the reward at β.</summary>
    public static GrpoOptions RlOptions(ExperimentConfig cfg, double beta, SweepGrid? grid = null) =>
        cfg.Grpo with
        {
            Beta = beta,
            MaxSteps = grid?.RlSteps(cfg.Grpo.MaxSteps, beta) ?? cfg.Grpo.MaxSteps,
            KlMode = "reward",
            ScaleRewards = "none",
            LossType = cfg.Grpo.LossType == "grpo" ? "dapo" : cfg.Grpo.LossType,
        };

    public static JsonObject Run(ExperimentRunner runner, SweepGrid grid, Action<string> log)
    {
        var cfg = runner.Config;
        var root = Path.Combine(runner.RunDir, "sweep");
        AtomicFile.WriteAllText(
            Path.Combine(runner.RunDir, "grid.json"),
            JsonSerializer.Serialize(grid, TrainOptions.Json)
        );
        var perSeed = new List<SweepRow>[runner.SeedList.Count];
        runner.ForEachSeed(
            (i, seed) =>
            {
                var rows = perSeed[i] = new List<SweepRow>();
                var baseDir = runner.BaseModel(seed);
                foreach (var f in grid.LooseFormatFractions)
                {
                    var t = runner.TaskWithLooseFraction(f);
                    var fDir = Path.Combine(root, $"f{Key(f)}", $"seed-{seed}");
                    Directory.CreateDirectory(fDir);
                    var sft = new ExperimentRunner.StagePlan("sft", "sft", cfg.Sft.MaxSteps, t);
                    using var sftModel = runner.RunStage(
                        runner.LoadBase(baseDir),
                        Path.Combine(fDir, "1-sft"),
                        sft,
                        "sweep",
                        seed * 100,
                        Math.Max(1, cfg.Sft.MaxSteps / cfg.EvalsPerStage),
                        $"sweep f={Key(f)}/seed-{seed}/sft"
                    );
                    var sftCkpt = TrainerCheckpoint.Latest(Path.Combine(fDir, "1-sft"))!;
                    foreach (var beta in grid.Betas)
                    {
                        log($"[sweep β={Key(beta)} f={Key(f)} seed {seed}]");
                        var pDir = Path.Combine(fDir, $"beta{Key(beta)}");
                        Directory.CreateDirectory(pDir);
                        var pred = runner.CachedPrediction(pDir, sftModel, t, beta, seed);
                        var g = RlOptions(cfg, beta, grid);
                        var rl = new ExperimentRunner.StagePlan("rl", "grpo", g.MaxSteps, t);
                        var rlDir = Path.Combine(pDir, "2-rl");
                        var model = runner.RunStage(
                            runner.LoadBase(sftCkpt),
                            rlDir,
                            rl,
                            "sweep",
                            seed * 100 + 1,
                            Math.Max(1, g.MaxSteps / cfg.EvalsPerStage),
                            $"sweep β={Key(beta)} f={Key(f)}/seed-{seed}/rl",
                            g
                        );
                        var pts = ExperimentRunner.EvalPoints(rlDir).ToList();
                        var real = Measure(rlDir, t, runner.StrictKey, beta);
                        var reachedCounts = runner.CachedReachedCounts(pDir, model, t, seed);
                        double measured = real.Rise,
                            finalReward = real.Reward;
                        var curve = pts.Select(p =>
                                (
                                    p.Step,
                                    p.Metrics["eval_sft_nll_per_response"] - pts[0].Metrics["eval_sft_nll_per_response"]
                                )
                            )
                            .ToList();
                        double? twinReward = null,
                            twinPred = null;
                        if (grid.Twin)
                        {
                            var twinDir = Path.Combine(pDir, "3-sft");
                            model = runner.RunStage(
                                model,
                                twinDir,
                                sft,
                                "sweep",
                                seed * 100 + 2,
                                Math.Max(1, cfg.Sft.MaxSteps / cfg.EvalsPerStage),
                                $"sweep β={Key(beta)} f={Key(f)}/seed-{seed}/twin-sft"
                            );
                            var last = ExperimentRunner.EvalPoints(twinDir).Last().Metrics;
                            twinReward = last[runner.StrictKey];
                            twinPred = (t.ExpertReward ?? runner.ExpertReward(t)) * last[runner.LenientKey];
                        }
                        model.Dispose();
                        RlMove? nul = null;
                        if (grid.Null == "all" || (grid.Null == "tested" && pred.Mean >= 0.1))
                        {
                            var nDir = Path.Combine(pDir, "2-rl-coin");
                            var coin = ExperimentRunner.CoinTask(t);
                            runner
                                .RunStage(
                                    runner.LoadBase(sftCkpt),
                                    nDir,
                                    rl with
                                    {
                                        Task = coin,
                                    },
                                    "sweep",
                                    seed * 100 + 1,
                                    Math.Max(1, g.MaxSteps / cfg.EvalsPerStage),
                                    $"sweep β={Key(beta)} f={Key(f)}/seed-{seed}/coin-rl",
                                    g
                                )
                                .Dispose();
                            nul = Measure(nDir, t, runner.StrictKey, beta);
                        }
                        rows.Add(
                            new SweepRow(beta, f, seed, pred, measured, finalReward, twinReward, twinPred, curve)
                            {
                                ByForm = ByForm(t, pred, pts[0].Metrics, pts[^1].Metrics),
                                RationaleRise = real.RationaleRise,
                                AnswerRise = real.AnswerRise,
                                KlReached = real.KlReached,
                                ForwardKlReached = real.ForwardKl,
                                RewardStd = real.RewardStd,
                                Null = nul,
                                Reached = reachedCounts,
                            }
                        );
                    }
                }
            }
        );
        var summary = Build(cfg, grid, perSeed.SelectMany(r => r).ToList(), runner.SeedList);
        AtomicFile.WriteAllText(
            Path.Combine(runner.RunDir, "sweep.json"),
            summary.ToJsonString(new JsonSerializerOptions { WriteIndented = true })
        );
        return summary;
    }

    /// <summary>What an RL stage moved (the real one or the coin-reward null): the rise (nats per response), its
    /// rationale and answer parts, the KL reached, the strict reward at the end and the mean within-group reward std.
    /// </summary>
    public sealed record RlMove(
        double Rise,
        double RationaleRise,
        double AnswerRise,
        double KlReached,
        double Reward,
        double RewardStd,
        double ForwardKl = double.NaN
    );

    /// <summary>The rise, its span parts (the split keys are nats per response of each form, weighted by the forms'
    /// shares of the held-out set, so rationale + answer = the rise) and the KL(π‖π_ref) per response RL reached
    /// (β·KL is verl's reward_kl_penalty, averaged over the last ten steps' rollouts) of a finished RL stage.</summary>
    static RlMove Measure(string rlDir, Data.TaskData t, string strictKey, double beta)
    {
        var pts = ExperimentRunner.EvalPoints(rlDir).ToList();
        double Span(string span) =>
            t
                .Eval.GroupBy(e => e.Form)
                .Sum(g =>
                    pts[^1].Metrics.TryGetValue($"eval_sft_nll/{g.Key}/{span}", out var end)
                        ? g.Count() / (double)t.Eval.Count * (end - pts[0].Metrics[$"eval_sft_nll/{g.Key}/{span}"])
                        : double.NaN
                );
        var rows = MetricsLog.Read(Path.Combine(rlDir, "metrics.jsonl")).ToList();
        var kl = rows.Where(r => r["reward_kl_penalty"] is not null)
            .TakeLast(10)
            .Select(r => r["reward_kl_penalty"]!.GetValue<double>() / beta)
            .ToList();
        return new RlMove(
            pts[^1].Metrics["eval_sft_nll_per_response"] - pts[0].Metrics["eval_sft_nll_per_response"],
            Span("rationale"),
            Span("answer"),
            kl.Count > 0 ? kl.Average() : double.NaN,
            pts[^1].Metrics[strictKey],
            // how much noise the advantages carried: the within-group std of the reward they are made of (with
            // kl_mode = reward, the shaped reward), averaged over the stage's steps
            rows.Where(r => r["reward_std"] is not null)
                .Select(r => r["reward_std"]!.GetValue<double>())
                .DefaultIfEmpty(double.NaN)
                .Average(),
            // KL(p_ref‖π) on samples of the SFT policy (the stage's start): it sees what RL took away from p_ref
            pts[^1].Metrics.GetValueOrDefault("eval_kl_from_start", double.NaN)
        );
    }

    public sealed record SweepRow(
        double Beta,
        double F,
        long Seed,
        C1Prediction Pred,
        double Measured,
        double FinalReward,
        double? TwinReward,
        double? TwinPredicted,
        List<(long Step, double Rise)> Curve
    )
    {
        /// <summary>The measured rise's parts in the rationale spans and the answer spans (nats per
        /// response).</summary>
        public double RationaleRise { get; init; } = double.NaN;
        public double AnswerRise { get; init; } = double.NaN;

        /// <summary>KL(π‖π_ref) per response at the end of RL (the last rollouts' estimate).</summary>
        public double KlReached { get; init; } = double.NaN;

        /// <summary>KL(p_ref‖π) per response at the end of RL (eval_kl_from_start).</summary>
        public double ForwardKlReached { get; init; } = double.NaN;

        /// <summary>Mean within-group reward std over the RL stage.</summary>
        public double RewardStd { get; init; } = double.NaN;

        /// <summary>The coin-reward null from the same SFT policy, when the grid runs it here.</summary>
        public RlMove? Null { get; init; }

        /// <summary>Per held-out prompt, the finished RL policy's successes (strict and lenient, c1_samples
        /// each).</summary>
        public ReachedCounts? Reached { get; init; }

        /// <summary>Per expert-response form: p*'s change of that form's NLL and the measured one (nats per response
        /// of the form).</summary>
        public IReadOnlyDictionary<string, (double Predicted, double Measured)>? ByForm { get; init; }
    }

    /// <summary>Where p* moves the held-out expert responses, per form: log p_ref(y|x) − log p*(y|x) = log Z(x) −
    /// r(x, y)/β, averaged over the responses of the form (plug-in log Z from the prompt's counts), against the
    /// measured change of the form's NLL (its rationale and answer spans). A miss then has a place: which form moved
    /// less or more than p* asks.</summary>
    public static Dictionary<string, (double Predicted, double Measured)>? ByForm(
        Data.TaskData t,
        C1Prediction pred,
        IReadOnlyDictionary<string, double> first,
        IReadOnlyDictionary<string, double> last
    )
    {
        if (pred.Successes is not { } s || s.Length != t.Eval.Count || pred.SamplesPerPrompt < 1)
            return null;
        var byForm = new Dictionary<string, (double, double)>();
        foreach (var g in t.Eval.Select((e, i) => (e, i)).GroupBy(x => x.e.Form).Where(g => g.Key.Length > 0))
        {
            double Nll(IReadOnlyDictionary<string, double> m) =>
                m.GetValueOrDefault($"eval_sft_nll/{g.Key}/rationale", double.NaN)
                + m.GetValueOrDefault($"eval_sft_nll/{g.Key}/answer", double.NaN);
            double predicted = g.Average(x =>
                C1Predictor.LogZ(s[x.i] / (double)pred.SamplesPerPrompt, pred.Beta)
                - (t.Reward.Score(x.e.PromptText, x.e.Expert, x.e.Reference).Reward ?? 0) / pred.Beta
            );
            byForm[g.Key] = (predicted, Nll(last) - Nll(first));
        }
        return byForm.Count > 0 ? byForm : null;
    }

    /// <summary>One group of held-out prompts, by how often the SFT policy (π_ref) succeeded on them: its share of the
    /// prompts; p*'s strict reward there (plug-in, from π_ref's counts) and RL's, from the finished policy's samples;
    /// RL's lenient reward there (the label right in any form); and the group's part of the shortfall Σ (p* − RL) / N,
    /// so the groups' parts add up to the whole shortfall.</summary>
    public sealed record ShortfallGroup(
        string Group,
        double PromptShare,
        double RewardAtOptimum,
        double Reached,
        double LenientReached,
        double Shortfall
    );

    /// <summary>Where RL's strict reward falls short of p*'s, by π_ref's success rate P on the prompt: P below 1/G (a
    /// group of G rollouts on such a prompt expects less than one success), 1/G to 1/2, and at least 1/2. The prompts
    /// are held out, so the groups say where what RL learnt on the training prompts carried over. In a group, p*'s
    /// strict reward minus RL's lenient one bounds the label's part of the gap from below; the rest is the strict
    /// line.</summary>
    public static List<ShortfallGroup> Shortfall(
        int[] refSuccesses,
        int refK,
        ReachedCounts reached,
        double beta,
        int g
    )
    {
        if (refSuccesses.Length != reached.Strict.Length || refSuccesses.Length == 0 || refK < 1 || reached.K < 1)
            throw new ArgumentException("per-prompt counts of different prompts");
        int n = refSuccesses.Length;
        var groups = new (string Name, Func<double, bool> In)[]
        {
            ($"P < 1/{g}", p => p < 1.0 / g),
            ($"1/{g} ≤ P < 1/2", p => p >= 1.0 / g && p < 0.5),
            ("P ≥ 1/2", p => p >= 0.5),
        };
        var list = new List<ShortfallGroup>();
        foreach (var (name, isIn) in groups)
        {
            var idx = Enumerable.Range(0, n).Where(i => isIn(refSuccesses[i] / (double)refK)).ToList();
            double Mean(Func<int, double> f) => idx.Count == 0 ? double.NaN : idx.Average(f);
            double Opt(int i) => C1Predictor.RewardAtOptimum(refSuccesses[i] / (double)refK, beta);
            double Got(int i) => reached.Strict[i] / (double)reached.K;
            list.Add(
                new ShortfallGroup(
                    name,
                    idx.Count / (double)n,
                    Mean(Opt),
                    Mean(Got),
                    Mean(i => reached.Lenient[i] / (double)reached.K),
                    idx.Sum(i => Opt(i) - Got(i)) / n
                )
            );
        }
        return list;
    }

    /// <summary>The point's shortfall from p*'s strict reward by π_ref's success rate (<see cref="Shortfall"/>), over
    /// its seeds, and a sentence naming the group that holds most of it; nothing when a seed lacks the counts (a sweep
    /// from before they were recorded).</summary>
    static (JsonArray? Json, string Text) ShortfallOf(IReadOnlyList<SweepRow> rs, double beta, int g)
    {
        if (rs.Any(r => r.Reached is null || r.Pred.Successes?.Length != r.Reached.Strict.Length))
            return (null, "");
        var per = rs.Select(r => Shortfall(r.Pred.Successes!, r.Pred.SamplesPerPrompt, r.Reached!, beta, g)).ToList();
        var json = new JsonArray();
        for (int j = 0; j < per[0].Count; j++)
        {
            // shares and rewards lie in [0, 1] and a group's part of the shortfall in [-1, 1]: so do their intervals
            Stat Of(Func<ShortfallGroup, double> f, double lo = 0) =>
                Stat.Bounded(per.Select(x => f(x[j])).ToArray(), lo, 1);
            json.Add(
                new JsonObject
                {
                    ["group"] = per[0][j].Group,
                    ["prompt_share"] = StatJson(Of(x => x.PromptShare)),
                    ["reward_at_optimum"] = StatJson(Of(x => x.RewardAtOptimum)),
                    ["reward_reached"] = StatJson(Of(x => x.Reached)),
                    ["lenient_reached"] = StatJson(Of(x => x.LenientReached)),
                    ["shortfall"] = StatJson(Of(x => x.Shortfall, -1)),
                }
            );
        }
        double total = per.Average(x => x.Sum(y => y.Shortfall));
        double reachedStrict = rs.Average(ReachedOf);
        double atOpt = per.Average(x => x.Where(y => y.PromptShare > 0).Sum(y => y.PromptShare * y.RewardAtOptimum));
        var text =
            $"; scored on {rs[0].Reached!.K} samples per held-out prompt, RL's strict reward was "
            + $"{reachedStrict:0.00} against p*'s {atOpt:0.00} (plug-in)";
        if (total > 0.02)
        {
            int top = Enumerable.Range(0, per[0].Count).MaxBy(j => per.Average(x => x[j].Shortfall));
            double Avg(Func<ShortfallGroup, double> f) =>
                per.Select(x => f(x[top])).Where(double.IsFinite).DefaultIfEmpty(double.NaN).Average();
            text +=
                $"; {Avg(x => x.Shortfall) / total:0%} of that shortfall is on the prompts where π_ref succeeded "
                + $"with {per[0][top].Group} ({Avg(x => x.PromptShare):0%} of them), where RL reached "
                + $"{Avg(x => x.Reached):0.00} against p*'s {Avg(x => x.RewardAtOptimum):0.00} and got the label "
                + $"right in any form in {Avg(x => x.LenientReached):0%} of samples";
        }
        return (json, text);
    }

    /// <summary>A seed's strict reward at the end of RL: on c1_samples samples per prompt where recorded, else the
    /// last evaluation's one sample per prompt.</summary>
    static double ReachedOf(SweepRow r) => r.Reached?.StrictRate ?? r.FinalReward;

    static JsonObject StatJson(Stat s) => Summary.StatJson(s);

    static JsonNode? Num(double x) => Summary.Num(x);

    static string F3(double x) =>
        Math.Round(x, 3) is var r && r == 0 ? "+0.000" : r.ToString("+0.000;-0.000", CultureInfo.InvariantCulture);

    public static JsonObject Build(
        ExperimentConfig cfg,
        SweepGrid grid,
        IReadOnlyList<SweepRow> rows,
        IReadOnlyList<long> seeds
    )
    {
        var points = new JsonArray();
        var sentences = new List<string>();
        int tested = 0,
            within = 0,
            testedNet = 0,
            withinNet = 0;
        foreach (var grp in rows.GroupBy(r => (r.Beta, r.F)))
        {
            var rs = grp.OrderBy(r => r.Seed).ToList();
            var measured = Stat.Of(rs.Select(r => r.Measured).ToArray());
            var predicted = Stat.Of(rs.Select(r => r.Pred.Mean).ToArray());
            // the prediction's CI: seeds' spread when there are several, else the bootstrap CI of the one seed
            var pci = rs.Count > 1 ? predicted.Ci95 : rs[0].Pred.Ci95;
            var ratio = Stat.Of(rs.Select(r => r.Measured / r.Pred.Mean).ToArray());
            var plugIn = Stat.Of(rs.Select(r => r.Pred.PlugIn ?? r.Pred.Mean).ToArray());
            var reached = Stat.Bounded(rs.Select(r => r.FinalReward).ToArray(), 0, 1);
            var atOpt = Stat.Bounded(rs.Select(r => r.Pred.RewardAtOptimum).ToArray(), 0, 1);
            var rationale = Stat.Of(rs.Select(r => r.RationaleRise).ToArray());
            var answer = Stat.Of(rs.Select(r => r.AnswerRise).ToArray());
            var klReached = Stat.Of(rs.Select(r => r.KlReached).ToArray());
            var klOpt = Stat.Of(rs.Select(r => r.Pred.KlAtOptimum ?? double.NaN).ToArray());
            // the forward KL, at p* from the per-prompt counts (plug-in) and reached (evaluated on p_ref's samples)
            var fwdOpt = Stat.Of(
                rs.Select(r =>
                        r.Pred.Successes is { Length: > 0 } s
                            ? s.Average(c =>
                                C1Predictor.ForwardKlAtOptimum(c / (double)r.Pred.SamplesPerPrompt, beta: r.Beta)
                            )
                            : double.NaN
                    )
                    .ToArray()
            );
            var fwdReached = Stat.Of(rs.Select(r => r.ForwardKlReached).ToArray());
            // summaries of the same comparison that a small denominator cannot inflate
            var diff = Stat.Of(rs.Select(r => r.Measured - r.Pred.Mean).ToArray());
            double ratioOfMeans = measured.Mean / predicted.Mean;
            // measured, not guessed: where the rise sits and how far RL moved against how far p* is
            var mechanism =
                double.IsFinite(rationale.Mean) && double.IsFinite(klReached.Mean)
                    ? $"; of the measured rise, the rationale spans (which the reward does not score) "
                        + $"carry {F3(rationale.Mean)} and the answer spans {F3(answer.Mean)}; RL moved KL(π‖π_ref) "
                        + $"{klReached.Mean:0.000} nats per response against {klOpt.Mean:0.000} at p*"
                        + (
                            double.IsFinite(fwdReached.Mean) && double.IsFinite(fwdOpt.Mean)
                                ? $", and KL(π_ref‖π), which weighs what RL took from π_ref's tail, "
                                    + $"{fwdReached.Mean:0.000} against {fwdOpt.Mean:0.000}"
                                : ""
                        )
                    : "";
            // the coin-reward null from the same SFT policies: predicted 0, so its rise is RL's own drift; the paired
            // difference is the part of the rise the reward's tilt made
            string nullText = "";
            JsonObject? nullJson = null;
            Stat? net = null,
                netRatio = null;
            if (rs.All(r => r.Null is not null))
            {
                var nRise = Stat.Of(rs.Select(r => r.Null!.Rise).ToArray());
                net = Stat.Of(rs.Select(r => r.Measured - r.Null!.Rise).ToArray());
                netRatio = Stat.Of(rs.Select(r => (r.Measured - r.Null!.Rise) / r.Pred.Mean).ToArray());
                var nRat = Stat.Of(rs.Select(r => r.Null!.RationaleRise).ToArray());
                nullJson = new JsonObject
                {
                    ["predicted"] = 0.0,
                    ["measured"] = StatJson(nRise),
                    ["measured_rationale_spans"] = StatJson(nRat),
                    ["measured_answer_spans"] = StatJson(Stat.Of(rs.Select(r => r.Null!.AnswerRise).ToArray())),
                    ["kl_reached"] = StatJson(Stat.Of(rs.Select(r => r.Null!.KlReached).ToArray())),
                    ["reward_std_mean"] = StatJson(Stat.Of(rs.Select(r => r.Null!.RewardStd).ToArray())),
                    ["strict_reward_reached"] = StatJson(Stat.Bounded(rs.Select(r => r.Null!.Reward).ToArray(), 0, 1)),
                };
                nullText =
                    $"; under the coin-reward null (predicted 0) the rise was {F3(nRise.Mean)} (95% CI "
                    + $"{nRise.Interval(F3)}, rationale spans {F3(nRat.Mean)}), so net of RL's "
                    + $"own drift the rise is {F3(net.Mean)} (paired CI {net.Interval(F3)}); "
                    + "the coin's groups carried a mean within-group std of the shaped reward (reward − β·log-ratio, "
                    + $"what the advantages are made of) of {rs.Average(r => r.Null!.RewardStd):0.00} against "
                    + $"{rs.Average(r => r.RewardStd):0.00} under the strict reward"
                    + (
                        rs.Average(r => r.Null!.RewardStd) > rs.Average(r => r.RewardStd)
                            ? " (more noise than the real run's, so the net rise is if anything understated)"
                            : " (no more noise than the real run's)"
                    );
            }
            // a plateau: the last evaluation interval moved the rise by less than 10% of the rise (or 0.02 nats)
            var plateau = rs.Select(r =>
                    r.Curve.Count >= 2
                    && Math.Abs(r.Curve[^1].Rise - r.Curve[^2].Rise) <= Math.Max(0.02, 0.1 * Math.Abs(r.Curve[^1].Rise))
                )
                .ToArray();
            var p = new JsonObject
            {
                ["beta"] = grp.Key.Beta,
                ["loose_format_fraction"] = grp.Key.F,
                ["rl_steps"] = grid.RlSteps(cfg.Grpo.MaxSteps, grp.Key.Beta),
                ["measured"] = StatJson(measured),
                ["predicted"] = new JsonObject
                {
                    ["mean"] = Num(predicted.Mean),
                    ["ci95"] = new JsonArray(Num(pci[0]), Num(pci[1])),
                    ["per_seed"] = new JsonArray(rs.Select(r => (JsonNode?)Num(r.Pred.Mean)).ToArray()),
                },
                // the estimator's parts: the plug-in and the Jensen bias the bootstrap measured (C1Prediction.cs)
                ["predicted_plug_in"] = StatJson(plugIn),
                ["jensen_bias_removed"] = StatJson(Stat.Of(rs.Select(r => r.Pred.JensenBias ?? double.NaN).ToArray())),
                ["ratio"] = StatJson(ratio),
                ["reward_reached"] = StatJson(reached),
                ["reward_at_optimum"] = StatJson(atOpt),
                ["plateau_per_seed"] = new JsonArray(plateau.Select(x => (JsonNode?)x).ToArray()),
                ["measured_rationale_spans"] = StatJson(rationale),
                ["measured_answer_spans"] = StatJson(answer),
                ["kl_reached"] = StatJson(klReached),
                ["reward_std_mean"] = StatJson(Stat.Of(rs.Select(r => r.RewardStd).ToArray())),
                ["kl_at_optimum"] = StatJson(klOpt),
                ["forward_kl_reached"] = StatJson(fwdReached),
                ["forward_kl_at_optimum"] = StatJson(fwdOpt),
                ["ratio_of_means"] = Num(ratioOfMeans),
                ["measured_minus_predicted"] = StatJson(diff),
                ["curves"] = new JsonArray(
                    rs.Select(r =>
                            (JsonNode?)
                                new JsonObject
                                {
                                    ["seed"] = r.Seed,
                                    ["points"] = new JsonArray(
                                        r.Curve.Select(c => (JsonNode?)new JsonArray(c.Step, Num(c.Rise))).ToArray()
                                    ),
                                }
                        )
                        .ToArray()
                ),
            };
            string formText = "";
            (string Form, double Measured, double Predicted)? widest = null;
            if (rs.All(r => r.ByForm is not null))
            {
                var forms = new JsonObject();
                var words = new List<string>();
                foreach (var form in rs[0].ByForm!.Keys.Order())
                {
                    if (!rs.All(r => r.ByForm!.ContainsKey(form)))
                        continue;
                    var fp = Stat.Of(rs.Select(r => r.ByForm![form].Predicted).ToArray());
                    var fm = Stat.Of(rs.Select(r => r.ByForm![form].Measured).ToArray());
                    forms[form] = new JsonObject { ["predicted"] = StatJson(fp), ["measured"] = StatJson(fm) };
                    words.Add($"{form} responses {F3(fm.Mean)} against {F3(fp.Mean)} at p*");
                    if (
                        widest is null
                        || Math.Abs(fm.Mean - fp.Mean) > Math.Abs(widest.Value.Measured - widest.Value.Predicted)
                    )
                        widest = (form, fm.Mean, fp.Mean);
                }
                p["by_form"] = forms;
                if (words.Count > 0)
                    formText =
                        "; per expert-response form, the NLL change (nats per response of the form, plug-in p*): "
                        + string.Join(", ", words);
            }
            if (nullJson is not null)
            {
                p["coin_null"] = nullJson;
                p["measured_minus_null"] = StatJson(net!);
                p["ratio_net_of_null"] = StatJson(netRatio!);
            }
            var (shortJson, shortText) = ShortfallOf(rs, grp.Key.Beta, cfg.Grpo.NumGenerations);
            if (shortJson is not null)
                p["shortfall_by_reference_success"] = shortJson;
            if (rs.All(r => r.TwinReward is not null))
                p["twin"] = new JsonObject
                {
                    ["measured"] = StatJson(Stat.Bounded(rs.Select(r => r.TwinReward!.Value).ToArray(), 0, 1)),
                    ["predicted"] = StatJson(Stat.Bounded(rs.Select(r => r.TwinPredicted!.Value).ToArray(), 0, 1)),
                };
            points.Add(p);
            var where = $"β {Key(grp.Key.Beta)}, loose fraction {Key(grp.Key.F)}";
            if (predicted.Mean >= 0.1)
            {
                tested++;
                bool ok = ratio.Mean is >= 0.7 and <= 1.3;
                if (ok)
                    within++;
                if (netRatio is not null)
                {
                    testedNet++;
                    if (netRatio.Mean is >= 0.7 and <= 1.3)
                        withinNet++;
                    nullText += $", ratio {netRatio.Mean:0.00} net of the null";
                }
                // where each finished policy was scored on c1_samples samples per prompt, that reading decides: one
                // sample per prompt can put a point within 0.05 of p*'s reward that 16 samples put outside
                bool perPrompt = rs.All(r => r.Reached is not null);
                double got = perPrompt ? rs.Average(ReachedOf) : reached.Mean;
                var vs =
                    $"{got:0.00} vs {atOpt.Mean:0.00}"
                    + (perPrompt ? $" on {rs[0].Reached!.K} samples per prompt" : "")
                    + (
                        rs.Count(r => ReachedOf(r) < r.Pred.RewardAtOptimum - 0.05) is var shortSeeds and > 0
                            ? $", {shortSeeds} of {rs.Count} seeds more than 0.05 short"
                            : ""
                    );
                var why =
                    ok ? ""
                    : got < atOpt.Mean - 0.05 ? $"; RL had not reached the optimum's reward ({vs}: not converged)"
                    : got > atOpt.Mean + 0.05
                        ? $"; RL went past the optimum's reward ({vs}: the policy moved further than p*)"
                    : $"; RL reached the optimum's reward ({vs}), so the miss is in how the mass moved, not how far";
                if (!ok && widest is { } w)
                    why +=
                        $"; the widest gap from p* is in the {w.Form} responses' NLL ({F3(w.Measured)} against "
                        + $"{F3(w.Predicted)})";
                sentences.Add(
                    $"{where}: measured {F3(measured.Mean)} vs predicted {F3(predicted.Mean)} nats per response "
                        + $"(the plug-in {F3(plugIn.Mean)} less its Jensen bias), "
                        + $"ratio {ratio.Mean:0.00} ({(ok ? "within" : "outside")} [0.7, 1.3]; per seed "
                        + string.Join(
                            ", ",
                            rs.Select(
                                (r, j) =>
                                    ratio.PerSeed[j].ToString("0.00", CultureInfo.InvariantCulture)
                                    // a ratio to a prediction near 0 is unstable: say so where it happens
                                    + (r.Pred.Mean < 0.1 ? $" (its prediction {F3(r.Pred.Mean)} is below 0.1)" : "")
                            )
                        )
                        + $"; ratio of the means {ratioOfMeans:0.00}; measured − predicted {F3(diff.Mean)}, 95% CI "
                        + diff.Interval(F3)
                        + (
                            ok && rs.Count > 1 && (diff.Ci95[1] - diff.Ci95[0]) > 0.6 * Math.Abs(predicted.Mean)
                                ? ", an interval too wide to confirm ±30%"
                                : ""
                        )
                        + $"){why}"
                        + (
                            plateau.All(x => x)
                                ? ""
                                : $"; {plateau.Count(x => !x)} of {plateau.Length} seeds had not plateaued"
                        )
                        + mechanism
                        + shortText
                        + formText
                        + nullText
                        + "."
                );
            }
            else
                sentences.Add(
                    $"{where}: predicted {F3(predicted.Mean)} (below 0.1, no rise to test), "
                        + $"measured {F3(measured.Mean)} "
                        + $"(95% CI {measured.Interval(F3)}){mechanism}{shortText}{formText}{nullText}."
                );
        }
        var headline =
            tested == 0
                ? "No grid point had a predicted rise of at least 0.1 nats per response."
                : $"{within} of {tested} points with a predicted rise ≥ 0.1 nats per response have "
                    + "measured/predicted within [0.7, 1.3]"
                    + (testedNet > 0 ? $"; net of the coin-reward null, {withinNet} of {testedNet} are." : ".");
        return new JsonObject
        {
            ["points"] = points,
            ["statements"] = new JsonArray([headline, .. sentences.Select(s => (JsonNode?)s)]),
            ["seeds"] = new JsonArray(seeds.Select(s => (JsonNode?)s).ToArray()),
            ["rl"] = new JsonObject
            {
                ["kl_mode"] = "reward",
                ["scale_rewards"] = "none",
                ["max_steps"] = cfg.Grpo.MaxSteps,
                // null: every β ran max_steps; else a point at β ran max_steps·(steps_beta/β)^steps_power
                ["steps_beta"] = grid.StepsBeta,
                ["steps_power"] = grid.StepsPower,
                ["learning_rate"] = cfg.Grpo.LearningRate,
            },
            ["config"] = JsonNode.Parse(cfg.ToJson()),
            ["versions"] = JsonSerializer.SerializeToNode(ExperimentRunner.Versions()),
        };
    }
}
