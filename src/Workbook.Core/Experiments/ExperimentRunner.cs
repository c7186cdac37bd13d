// Runs the coupling experiments. Per training seed:
//   base  : (embedded default only) a short SFT on terse answers, so RL starts with non-zero reward; cached under
//           <runs>/.cache/base/<hash>/seed-N and reused by every run with the same task, model shape and base budget;
//   then each pipeline starts from that base model:
//   sft-then-rl : SFT (N_sft steps) then GRPO (N_rl)          — the paper predicts the SFT loss rises during GRPO
//   rl-then-sft : GRPO (N_rl) then SFT (N_sft)                — the paper predicts the reward falls during SFT
//   interleaved : R rounds of [SFT N_sft/R, GRPO N_rl/R]      — same budget
//   joint       : N_sft steps of L_SFT + λ·L_GRPO, the GRPO term every N_sft/N_rl steps — same budget
// Every stage evaluates on held-out expert data (SFT loss, strict and lenient reward) at its start and every few steps.
// A stage folder with done.json is complete; a killed run resumes inside the unfinished stage from its last checkpoint.
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Workbook.Data;
using Workbook.Model;
using Workbook.Text;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Experiments;

public sealed record EvalPoint(long GlobalStep, int Stage, string Kind, Dictionary<string, double> Metrics);

public sealed record StageInfo(string Name, string Kind, long Start, long Steps);

public sealed record SeedResult(long Seed, List<StageInfo> Stages, List<EvalPoint> Curve, double? C1);

public sealed class ExperimentRunner
{
    readonly ExperimentConfig cfg;
    readonly string runDir, cacheRoot;
    readonly Action<string> log;
    readonly TaskData task;
    readonly Codec codec;
    readonly Evaluator evaluator;
    readonly ScalarType dtype;
    readonly Device device;
    public string StrictKey => $"eval_rewards/{task.Reward.Name}/mean";
    public string LenientKey => $"eval_rewards/{task.EvalVerifiers[^1].Name}/mean";
    public TaskData Task => task;
    public Codec Codec => codec;
    public string RunDir => runDir;
    public event Action<string, long, IReadOnlyDictionary<string, double>>? OnMetrics;

    public ExperimentRunner(ExperimentConfig config, string runDir, string runsRoot, Action<string>? log = null)
    {
        config.Validate();
        cfg = config; this.runDir = runDir; this.log = log ?? (_ => { });
        cacheRoot = Path.Combine(runsRoot, ".cache");
        dtype = Devices.ParseDType(cfg.Dtype);
        device = Devices.Resolve(cfg.Device);
        task = TaskRegistry.Create(cfg.Dataset, cfg.DatasetSeed, cfg.Task);
        (cfg, var epochNotes) = EpochResolution.Resolve(cfg, task);   // issue 12: epochs -> steps, data notes in the log
        foreach (var note in task.Notes.Concat(epochNotes)) this.log(note);
        Qwen3Tokenizer tok = cfg.Model is not null && File.Exists(Path.Combine(cfg.Model, "tokenizer.json"))
            ? Qwen3Tokenizer.Load(cfg.Model) : Qwen3Tokenizer.Load(TokenizerFiles.EnsureDefault(this.log));
        var vocab = cfg.Model is null ? TaskVocabulary.Build(tok, task)
            : ModelVocabulary.For(cfg.Model, Qwen3Config.Load(Path.Combine(cfg.Model, "config.json")).VocabSize);   // issue 12
        codec = new Codec(tok, vocab) { EnableThinking = cfg.Task.EnableThinking };   // issue 12
        evaluator = new Evaluator(codec, task.Eval, task.EvalVerifiers, new EvalOptions
        {
            MaxNewTokens = cfg.Grpo.MaxCompletionLength, Temperature = cfg.Grpo.Temperature, TopP = cfg.Grpo.TopP, TopK = cfg.Grpo.TopK,
            MaxLength = cfg.Sft.MaxLength, Seed = 4242,
        });
    }

    /// <summary>runs/&lt;yyyyMMdd-HHmmss&gt;-&lt;name&gt;, with a suffix if that exists: a run never overwrites another.</summary>
    public static string NewRunDir(string runsRoot, string name)
    {
        var stem = Path.Combine(runsRoot, $"{DateTime.Now:yyyyMMdd-HHmmss}-{name}");
        var dir = stem;
        for (int i = 2; Directory.Exists(dir); i++) dir = $"{stem}-{i}";
        return dir;
    }

    public IReadOnlyList<long> SeedList => Enumerable.Range(0, cfg.Seeds).Select(i => (long)(cfg.SeedBase + i)).ToList();

    public Dictionary<string, List<SeedResult>> Run(IReadOnlyList<string> pipelines)
    {
        foreach (var p in pipelines)
            if (!ExperimentConfig.Pipelines.Contains(p)) throw new WorkbookException($"unknown experiment '{p}': expected {string.Join(", ", ExperimentConfig.Pipelines)} or all");
        Directory.CreateDirectory(runDir);
        WriteRunFiles(pipelines);
        var results = pipelines.ToDictionary(p => p, _ => new List<SeedResult>());
        foreach (var seed in SeedList)
        {
            var baseDir = BaseModel(seed);
            foreach (var p in pipelines)
            {
                log($"[{p} seed {seed}]");
                results[p].Add(RunPipeline(p, seed, baseDir));
            }
        }
        return results;
    }

    /// <summary>Runs the pipelines, then writes summary.json and report.html into the run folder. Returns the summary and
    /// the report's path.</summary>
    public (JsonObject Summary, string Report) RunAndReport(IReadOnlyList<string> pipelines)
    {
        var results = Run(pipelines);
        var summary = Summary.Build(cfg, results, StrictKey, LenientKey, task.Design, Versions(), SeedList);
        Summary.Save(runDir, summary);
        return (summary, Report.Write(runDir));
    }

    void WriteRunFiles(IReadOnlyList<string> pipelines)
    {
        var cfgPath = Path.Combine(runDir, "config.json");
        if (!File.Exists(cfgPath)) AtomicFile.WriteAllText(cfgPath, cfg.ToJson());
        AtomicFile.WriteAllText(Path.Combine(runDir, "versions.json"), JsonSerializer.Serialize(Versions(), new JsonSerializerOptions { WriteIndented = true }));
        AtomicFile.WriteAllText(Path.Combine(runDir, "seeds.json"), JsonSerializer.Serialize(new { seeds = SeedList, pipelines, dataset_seed = cfg.DatasetSeed }));
        codec.Vocab.Save(Path.Combine(runDir, "vocab.json"));
    }

    public static Dictionary<string, string> Versions() => new()
    {
        ["workbook"] = typeof(ExperimentRunner).Assembly.GetName().Version?.ToString() ?? "?",
        ["torchsharp"] = typeof(TorchSharp.torch).Assembly.GetName().Version?.ToString() ?? "?",
        ["libtorch"] = "2.10.0",
        ["dotnet"] = Environment.Version.ToString(),
        ["os"] = System.Runtime.InteropServices.RuntimeInformation.OSDescription,
        ["threads"] = get_num_threads().ToString(),
        ["device"] = cuda.is_available() ? "cuda" : "cpu",
    };

    Qwen3ForCausalLM LoadModel(string dir) => Checkpoint.Load(dir, dtype, device);

    /// <summary>The model every pipeline of this seed starts from (HF folder).</summary>
    /// <summary>The base model's folder for a seed: the cached one, or trained now and cached.</summary>
    public string BaseModel(long seed)
    {
        if (cfg.Model is not null) return cfg.Model;
        var key = JsonSerializer.Serialize(new { cfg.Dataset, cfg.DatasetSeed, cfg.Task, shape = cfg.ModelConfig(codec.Vocab.Size), cfg.Base, vocab = codec.Vocab.QwenIds, cfg.Dtype }, TrainOptions.Json);
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)))[..12];
        var dir = Path.Combine(cacheRoot, "base", hash, $"seed-{seed}");
        if (File.Exists(Path.Combine(dir, "done.json"))) { log($"base model (cached): {dir}"); return dir; }
        log($"base model: {cfg.Base.MaxSteps} SFT steps on terse answers (seed {seed}) -> {dir}");
        var work = Path.Combine(cacheRoot, "base", hash, $".tmp-seed-{seed}-{Guid.NewGuid():N}");
        using (var model = new Qwen3ForCausalLM(cfg.ModelConfig(codec.Vocab.Size), dtype, device, seed))
        {
            var tr = new SftTrainer(model, codec, task.Base, cfg.Base with { Seed = seed }, Path.Combine(work, "train"));
            tr.Train();
            Checkpoint.Save(model, work);
        }
        Directory.Delete(Path.Combine(work, "train"), true);
        File.WriteAllText(Path.Combine(work, "done.json"), key);
        // one rename publishes the complete model; if another run published it meanwhile, keep theirs
        if (Directory.Exists(dir) && !File.Exists(Path.Combine(dir, "done.json"))) Directory.Delete(dir, true);
        try { Directory.Move(work, dir); }
        catch (IOException) when (File.Exists(Path.Combine(dir, "done.json"))) { Directory.Delete(work, true); }
        return dir;
    }

    List<(string name, string kind, int steps)> Plan(string pipeline)
    {
        int nS = cfg.Sft.MaxSteps, nR = cfg.Grpo.MaxSteps, R = cfg.InterleaveRounds;
        return pipeline switch
        {
            "sft-then-rl" => [("sft", "sft", nS), ("rl", "grpo", nR)],
            "rl-then-sft" => [("rl", "grpo", nR), ("sft", "sft", nS)],
            "interleaved" => Enumerable.Range(0, R).SelectMany(r => new[]
            {
                ($"round{r + 1}-sft", "sft", nS / R + (r == R - 1 ? nS % R : 0)),
                ($"round{r + 1}-rl", "grpo", nR / R + (r == R - 1 ? nR % R : 0)),
            }).ToList(),
            "joint" => [("joint", "joint", nS)],
            _ => throw new WorkbookException($"unknown pipeline '{pipeline}'"),
        };
    }

    SeedResult RunPipeline(string pipeline, long seed, string baseDir)
    {
        var seedDir = Path.Combine(runDir, pipeline, $"seed-{seed}");
        Directory.CreateDirectory(seedDir);
        var plan = Plan(pipeline);
        var model = LoadModel(baseDir);
        var stages = new List<StageInfo>();
        var curve = new List<EvalPoint>();
        double? c1 = null;
        long global = 0;
        for (int i = 0; i < plan.Count; i++)
        {
            var (name, kind, steps) = plan[i];
            var dir = Path.Combine(seedDir, $"{i + 1}-{name}");
            long stageSeed = seed * 100 + i;
            if (pipeline == "sft-then-rl" && kind == "grpo" && cfg.Grpo.Beta > 0 && cfg.C1Samples > 0)
                c1 = CachedC1(seedDir, model, seed);
            if (File.Exists(Path.Combine(dir, "done.json")))
            {
                model.Dispose();
                model = LoadModel(TrainerCheckpoint.Latest(dir) ?? throw new WorkbookException($"{dir}: marked done but has no checkpoint"));
            }
            else
            {
                bool resume = File.Exists(Path.Combine(dir, "metrics.jsonl"));
                // interleaved phases are short: evaluate at their ends only
                int evalEvery = pipeline == "interleaved" ? steps : Math.Max(1, steps / cfg.EvalsPerStage);
                dynamic trainer = kind switch
                {
                    "sft" => new SftTrainer(model, codec, task.Train, cfg.Sft with { MaxSteps = steps, Seed = stageSeed, EvalSteps = evalEvery }, dir, evaluator),
                    "grpo" => new GrpoTrainer(model, codec, task.Train, task.Reward, cfg.Grpo with { MaxSteps = steps, Seed = stageSeed, EvalSteps = evalEvery }, dir, evaluator),
                    _ => new JointTrainer(model, codec, task.Train, task.Reward, new JointOptions
                    {
                        LearningRate = cfg.Sft.LearningRate, MaxSteps = steps, WarmupRatio = cfg.Sft.WarmupRatio, LrSchedulerType = cfg.Sft.LrSchedulerType,
                        MaxGradNorm = cfg.Sft.MaxGradNorm, Seed = stageSeed, EvalSteps = evalEvery, Sft = cfg.Sft, Grpo = cfg.Grpo,
                        RlWeight = cfg.JointRlWeight, RlEvery = Math.Max(1, cfg.Sft.MaxSteps / Math.Max(1, cfg.Grpo.MaxSteps)),
                    }, dir, evaluator),
                };
                ((Dictionary<string, object>)trainer.LogFields)["stage"] = name;
                var stageName = $"{pipeline}/seed-{seed}/{name}";
                Action<long, IReadOnlyDictionary<string, double>> relay = (s, m) => OnMetrics?.Invoke(stageName, s, m);
                trainer.OnLog += relay;
                trainer.Train(resume);
                File.WriteAllText(Path.Combine(dir, "done.json"), JsonSerializer.Serialize(new { steps, kind }));
            }
            stages.Add(new StageInfo(name, kind, global, steps));
            foreach (var o in MetricsLog.Read(Path.Combine(dir, "metrics.jsonl")).Where(o => o.ContainsKey("eval_sft_loss")))
            {
                var m = o.Where(kv => kv.Key.StartsWith("eval_") && kv.Value is JsonValue).ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<double>());
                curve.Add(new EvalPoint(global + o["step"]!.GetValue<long>(), i, kind, m));
            }
            global += steps;
        }
        model.Dispose();
        return new SeedResult(seed, stages, curve, c1);
    }

    double CachedC1(string seedDir, Qwen3ForCausalLM model, long seed)
    {
        var path = Path.Combine(seedDir, "c1.json");
        if (File.Exists(path)) return JsonNode.Parse(File.ReadAllText(path))!["c1"]!.GetValue<double>();
        var c1 = evaluator.EstimateC1(model, task.Reward, cfg.Grpo.Beta, cfg.C1Samples, seed);
        AtomicFile.WriteAllText(path, JsonSerializer.Serialize(new { c1, beta = cfg.Grpo.Beta, samples_per_prompt = cfg.C1Samples, units = "nats per response" }));
        return c1;
    }
}
