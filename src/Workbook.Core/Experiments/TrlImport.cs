// `workbook report --from-trl DIR`: the coupling findings of TRL runs (trainer_state.json: log_history, TRL's names);
// the page is Reports/TrlReport.cs.
//  1. Layout (what `export-recipe --engine trl` writes; the levels in brackets are optional):
//       DIR/[<pipeline>/][seed-<N>/]<k>-<name>/trainer_state.json   (or the last checkpoint-<step>/trainer_state.json)
//     Stage folders run in the order of k; each is the output_dir of one TRL run, started from the previous one's
//     model. A stage is GRPO if its log has `reward` or `rewards/<f>/mean`, else SFT. Without a pipeline folder the
//     pipeline is named from its stage order (sft-then-rl, rl-then-sft).
//  2. Metrics: the SFT loss on held-out expert data is `eval_sft_loss` (the recipe's callback), or TRL's `eval_loss`
//     in SFT stages (the same quantity there; in GRPO stages eval_loss is the GRPO loss and is not used). Rewards are
//     `eval_rewards/<f>/mean` (f with "strict" / "lenient" in its name; '_' and '-' alike); GRPO's training `reward`
//     is charted on its own, since it is measured on the training rollouts, not on held-out prompts.
//  3. A change during a stage is its last value minus its value at the stage's start: the stage's step-0 evaluation,
//     or else the previous stage's last one (the same model). Over seeds: mean and 95% Student-t interval.
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Workbook.Experiments;

public sealed record TrlPoint(double Step, IReadOnlyDictionary<string, double> Metrics);

/// <summary>One TRL run: its kind, source file, log points (steps local to the stage) and length in steps.</summary>
public sealed record TrlStage(string Name, string Kind, string Source, List<TrlPoint> Points, double Steps);

public sealed record TrlSeed(string Name, List<TrlStage> Stages);

public sealed record TrlPipeline(string Name, List<TrlSeed> Seeds);

public static partial class TrlImport
{
    public const string SftLoss = "sft_loss",
        Strict = "strict_reward",
        Lenient = "lenient_reward";
    public const string TrainReward = "train_reward";

    [GeneratedRegex(@"^(\d+)-")]
    private static partial Regex StagePrefix();

    [GeneratedRegex(@"^checkpoint-(\d+)$")]
    private static partial Regex CheckpointName();

    static bool IsStageDir(string d) => StagePrefix().IsMatch(Path.GetFileName(d));

    static int StageNumber(string d) =>
        int.Parse(StagePrefix().Match(Path.GetFileName(d)).Groups[1].Value, CultureInfo.InvariantCulture);

    static List<string> StageDirs(string d) =>
        Directory.GetDirectories(d).Where(IsStageDir).OrderBy(StageNumber).ToList();

    public static List<TrlPipeline> Load(string dir)
    {
        if (!Directory.Exists(dir))
            throw new WorkbookException($"--from-trl {dir}: folder not found");
        List<TrlSeed> Seeds(string d)
        {
            if (StageDirs(d).Count > 0)
                return [new TrlSeed("seed", StageDirs(d).Select(LoadStage).ToList())];
            var seeds = Directory.GetDirectories(d, "seed-*").Order(StringComparer.Ordinal).ToList();
            return seeds
                .Where(s => StageDirs(s).Count > 0)
                .Select(s => new TrlSeed(Path.GetFileName(s), StageDirs(s).Select(LoadStage).ToList()))
                .ToList();
        }
        var pipelines = new List<TrlPipeline>();
        var here = Seeds(dir);
        if (here.Count > 0)
            pipelines.Add(new TrlPipeline(NameFromKinds(here[0]), here));
        else
            foreach (var p in Directory.GetDirectories(dir).Order(StringComparer.Ordinal))
                if (Seeds(p) is { Count: > 0 } s)
                    pipelines.Add(new TrlPipeline(Path.GetFileName(p), s));
        if (pipelines.Count == 0)
            throw new WorkbookException(
                $"--from-trl {dir}: no TRL stage folders found; expected "
                    + "DIR/[<pipeline>/][seed-<N>/]<k>-<name>/trainer_state.json "
                    + "(e.g. sft-then-rl/seed-1/1-sft, 2-grpo)"
            );
        foreach (var p in pipelines)
        {
            var shape = string.Join(",", p.Seeds[0].Stages.Select(s => s.Kind));
            foreach (var s in p.Seeds)
                if (string.Join(",", s.Stages.Select(x => x.Kind)) != shape)
                    throw new WorkbookException(
                        $"--from-trl {dir}: {p.Name}/{s.Name} has stages "
                            + $"[{string.Join(",", s.Stages.Select(x => x.Kind))}], the first seed [{shape}]; "
                            + "every seed of a pipeline must run the same stages"
                    );
        }
        return pipelines;
    }

    static string NameFromKinds(TrlSeed s) =>
        string.Join(",", s.Stages.Select(x => x.Kind)) switch
        {
            "sft,grpo" => "sft-then-rl",
            "grpo,sft" => "rl-then-sft",
            var other => other.Replace(',', '-'),
        };

    /// <summary>A stage folder: its trainer_state.json, or the one of its last checkpoint.</summary>
    public static TrlStage LoadStage(string stageDir)
    {
        var file = Path.Combine(stageDir, "trainer_state.json");
        if (!File.Exists(file))
        {
            var last = Directory
                .GetDirectories(stageDir)
                .Select(d => (d, m: CheckpointName().Match(Path.GetFileName(d))))
                .Where(x => x.m.Success && File.Exists(Path.Combine(x.d, "trainer_state.json")))
                .OrderBy(x => long.Parse(x.m.Groups[1].Value, CultureInfo.InvariantCulture))
                .LastOrDefault();
            if (last.d is null)
                throw new WorkbookException($"{stageDir}: no trainer_state.json (nor in a checkpoint-<step> folder)");
            file = Path.Combine(last.d, "trainer_state.json");
        }
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(file))?.AsObject() ?? throw new JsonException("empty");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new WorkbookException($"{file}: not JSON ({e.Message})");
        }
        if (root["log_history"] is not JsonArray log)
            throw new WorkbookException($"{file}: no log_history array (not a TRL trainer_state.json)");
        var raw = new List<(double Step, Dictionary<string, double> M)>();
        for (int i = 0; i < log.Count; i++)
        {
            if (log[i] is not JsonObject e)
                throw new WorkbookException($"{file}: log_history[{i}] is not an object");
            if (e["step"] is not JsonValue sv || !sv.TryGetValue<double>(out var step))
                throw new WorkbookException($"{file}: log_history[{i}] has no numeric 'step'");
            var m = new Dictionary<string, double>();
            foreach (var (k, v) in e)
                if (v is JsonValue jv && jv.GetValueKind() == JsonValueKind.Number)
                    m[k] = jv.GetValue<double>();
            raw.Add((step, m));
        }
        bool grpo = raw.Any(r => r.M.ContainsKey("reward") || r.M.Keys.Any(k => k.StartsWith("rewards/")));
        var kind = grpo ? "grpo" : "sft";
        var points = new List<TrlPoint>();
        foreach (var (step, m) in raw)
        {
            var c = new Dictionary<string, double>();
            // TRL's eval_loss is the SFT loss only in SFT stages
            if (m.TryGetValue("eval_sft_loss", out var l) || (!grpo && m.TryGetValue("eval_loss", out l)))
                c[SftLoss] = l;
            foreach (var (k, v) in m)
            {
                if (!k.StartsWith("eval_rewards/") || !k.EndsWith("/mean"))
                    continue;
                var f = k["eval_rewards/".Length..^"/mean".Length].Replace('_', '-');
                if (f.Contains("strict"))
                    c[Strict] = v;
                else if (f.Contains("lenient"))
                    c[Lenient] = v;
            }
            if (m.TryGetValue("reward", out var r))
                c[TrainReward] = r;
            if (c.Count > 0)
                points.Add(new TrlPoint(step, c));
        }
        double steps =
            root["global_step"] is JsonValue g && g.TryGetValue<double>(out var gs)
                ? gs
                : raw.Select(x => x.Step).DefaultIfEmpty(0).Max();
        return new TrlStage(Path.GetFileName(stageDir), kind, file, points, steps);
    }

    /// <summary>A metric at the stage's start (its step-0 point, else the previous stage's last) and at its
    /// end.</summary>
    public static (double Start, double End) Change(TrlSeed seed, int stage, string key)
    {
        var st = seed.Stages[stage];
        var pts = st.Points.Where(p => p.Metrics.ContainsKey(key)).ToList();
        if (pts.Count == 0)
            return (double.NaN, double.NaN);
        var prev = stage > 0 ? seed.Stages[stage - 1].Points.LastOrDefault(p => p.Metrics.ContainsKey(key)) : null;
        double start =
            pts[0].Step == 0 ? pts[0].Metrics[key]
            : prev is not null ? prev.Metrics[key]
            : pts[0].Metrics[key];
        return (start, pts[^1].Metrics[key]);
    }

    static double[] Deltas(TrlPipeline p, int stage, string key) =>
        p.Seeds.Select(s => Change(s, stage, key) is var (a, b) ? b - a : double.NaN).ToArray();

    internal static string F(double x) =>
        double.IsFinite(x) ? x.ToString("+0.000;-0.000", CultureInfo.InvariantCulture) : "n/a";

    static string Interval(Stat s, int n) =>
        double.IsFinite(s.Ci95[0])
            ? $"95% CI {s.Interval(F)}, {n} seeds"
            : $"{n} seed{(n == 1 ? "" : "s")}: no interval";

    /// <summary>The changes the paper predicts and plain statements, per pipeline.</summary>
    public static List<(string Pipeline, string Quantity, Stat Stat, string Statement)> Findings(
        IReadOnlyList<TrlPipeline> pipelines
    )
    {
        var list = new List<(string, string, Stat, string)>();
        foreach (var p in pipelines)
        {
            var kinds = p.Seeds[0].Stages.Select(s => s.Kind).ToList();
            int n = p.Seeds.Count;
            for (int i = 1; i < kinds.Count; i++)
            {
                if (kinds[i] == "grpo" && kinds[i - 1] == "sft")
                {
                    var s = Stat.Of(Deltas(p, i, SftLoss));
                    var r = Stat.Of(Deltas(p, i, Strict));
                    string verdict =
                        s.AboveZero ? "held: the SFT loss rose"
                        : n == 1 && s.Mean > 0 ? "the SFT loss rose (one seed, so no interval)"
                        : double.IsNaN(s.Mean) ? "not measured (no held-out SFT loss in this stage's log)"
                        : $"not shown: {s.Unseparated}";
                    list.Add(
                        (
                            p.Name,
                            $"Δ SFT loss during GRPO (stage {i + 1})",
                            s,
                            $"{p.Name}: during GRPO after SFT, {verdict}; change {F(s.Mean)} nats/token "
                                + $"({Interval(s, n)}), "
                                + $"strict reward change {F(r.Mean)}."
                        )
                    );
                    list.Add((p.Name, $"Δ strict reward during GRPO (stage {i + 1})", r, ""));
                }
                if (kinds[i] == "sft" && kinds[i - 1] == "grpo")
                {
                    var r = Stat.Of(Deltas(p, i, Strict));
                    var l = Stat.Of(Deltas(p, i, Lenient));
                    string verdict =
                        r.BelowZero ? "held: the strict reward fell"
                        : n == 1 && r.Mean < 0 ? "the strict reward fell (one seed, so no interval)"
                        : double.IsNaN(r.Mean) ? "not measured (no held-out strict reward in this stage's log)"
                        : $"not shown: {r.Unseparated}";
                    list.Add(
                        (
                            p.Name,
                            $"Δ strict reward during SFT (stage {i + 1})",
                            r,
                            $"{p.Name}: during SFT after GRPO, {verdict}; change {F(r.Mean)} ({Interval(r, n)}), "
                                + $"lenient reward change {F(l.Mean)}."
                        )
                    );
                    list.Add((p.Name, $"Δ lenient reward during SFT (stage {i + 1})", l, ""));
                }
            }
        }
        return list;
    }

    /// <summary>A metric's points per seed over the pipeline's steps (stages laid end to end).</summary>
    internal static IReadOnlyList<(double, double)[]> Series(TrlPipeline p, string key) =>
        p
            .Seeds.Select(s =>
            {
                var pts = new List<(double, double)>();
                double offset = 0;
                foreach (var st in s.Stages)
                {
                    pts.AddRange(
                        st.Points.Where(x => x.Metrics.ContainsKey(key)).Select(x => (offset + x.Step, x.Metrics[key]))
                    );
                    offset += st.Steps;
                }
                return pts.ToArray();
            })
            .ToList();
}
