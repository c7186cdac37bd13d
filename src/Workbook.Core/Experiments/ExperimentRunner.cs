// Runs the coupling experiments. Per training seed:
//   base  : (embedded default only) a short SFT on terse answers, so RL starts with non-zero reward; cached under
//           <runs>/.cache/base/<hash>/seed-N and reused by every run with the same task, model shape and base budget;
//   then each pipeline starts from that base model:
//   sft-then-rl : SFT (N_sft steps) then GRPO (N_rl)          — the paper predicts the SFT loss rises during GRPO
//   rl-then-sft : GRPO (N_rl) then SFT (N_sft)                — the paper predicts the reward falls during SFT
//   interleaved : R rounds of [SFT N_sft/R, GRPO N_rl/R]      — same budget
//   joint       : N_sft steps of L_SFT + λ·L_GRPO, the GRPO term every N_sft/N_rl steps — same budget
// Every stage evaluates on held-out expert data (SFT loss, strict and lenient reward) at its start and every few steps,
// with the forgetting metrics (Training/Forgetting.cs): KL from the stage's start, entropy, and with forgetting_task
// the other embedded task's held-out loss (that task is then in the vocabulary and in the base stage's data).
// A stage folder with done.json is complete; a killed run resumes inside the unfinished stage from its last checkpoint.
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Workbook.Data;
using Workbook.Model;
using Workbook.Text;
using Workbook.Theory;
using Workbook.Training;
using Workbook.Verifiers;
using static TorchSharp.torch;

namespace Workbook.Experiments;

public sealed record EvalPoint(long GlobalStep, int Stage, string Kind, Dictionary<string, double> Metrics);

public sealed record StageInfo(string Name, string Kind, long Start, long Steps)
{
    /// <summary>The stage stopped early: its first GRPO steps had zero reward variance in every group.</summary>
    public bool NoRewardSignal { get; init; }
}

/// <summary>A GRPO stage with a stop rule (issue 14 §3): where it stopped, what it predicted at the check before, the
/// planned budget, and the evaluations (step, J, L) at the steps where it could stop (0, k, 2k, ... and the budget's
/// end), including those after the stop when it trained on for hindsight.</summary>
public sealed record StopRun(
    string Rule,
    int CheckSteps,
    long StoppedAt,
    bool Fired,
    long? PredictedStep,
    long PlannedSteps,
    List<StopEval> Evals
)
{
    /// <summary>Consecutive checks the marginal condition had to hold (grpo.stop_patience).</summary>
    public int Patience { get; init; } = 1;

    /// <summary>grpo.stop_restore_best: the result is the best evaluated model up to the firing step.</summary>
    public bool RestoreBest { get; init; }

    /// <summary>The step whose model is the stage's result (done.json's result_step; null in older runs).</summary>
    public long? ResultStep { get; init; }

    /// <summary>The best step (restore best) or the firing step.</summary>
    public long Result => ResultStep ?? StoppedAt;

    /// <summary>The same quantities on fresh prompts the rule never saw (guarded.confirm_size), at the same steps;
    /// empty when there were none.</summary>
    public List<StopEval> Confirm { get; init; } = [];
}

public sealed record SeedResult(long Seed, List<StageInfo> Stages, List<EvalPoint> Curve, double? C1)
{
    /// <summary>The stop rule's record of this pipeline's RL stage (the guarded pipeline), else null.</summary>
    public StopRun? Stop { get; init; }

    /// <summary>The predicted SFT-loss rise during this pipeline's RL stage (SFT then RL pipelines only).</summary>
    public C1Prediction? Prediction { get; init; }
}

public sealed class ExperimentRunner
{
    readonly ExperimentConfig cfg;
    readonly string runDir,
        runsRoot,
        cacheRoot;
    readonly Action<string> log;
    readonly TaskData task;
    readonly TaskData? otherTask; // forgetting_task
    readonly Codec codec;
    readonly Evaluator evaluator;
    readonly ScalarType dtype;
    readonly Device device;
    public string StrictKey => $"eval_rewards/{task.Reward.Name}/mean";
    public string LenientKey => $"eval_rewards/{task.EvalVerifiers[^1].Name}/mean";
    public TaskData Task => task;
    public Codec Codec => codec;
    public string RunDir => runDir;

    /// <summary>Copy each (pipeline, seed) that a finished run in the same runs folder computed with the same config,
    /// code and machine instead of training it again (UnitReuse.cs). Off by default; the notebooks turn it
    /// on.</summary>
    public bool Reuse { get; init; }

    readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> reused = new();
    List<string>? donors;
    int session = 1; // this session's number (1, or k for timing-k.json); the donor search writes its versions
    public event Action<string, long, IReadOnlyDictionary<string, double>>? OnMetrics;

    public ExperimentRunner(ExperimentConfig config, string runDir, string runsRoot, Action<string>? log = null)
    {
        config.Validate();
        cfg = config;
        this.runDir = runDir;
        this.log = log ?? (_ => { });
        this.runsRoot = runsRoot;
        cacheRoot = Path.Combine(runsRoot, ".cache");
        dtype = Devices.ParseDType(cfg.Dtype);
        device = Devices.Resolve(cfg.Device);
        Devices.CheckDTypeFast(dtype, device.type, "dtype (--dtype or the run config)");
        task = TaskRegistry.Create(cfg.Dataset, cfg.DatasetSeed, cfg.Task);
        (cfg, var epochNotes) = EpochResolution.Resolve(cfg, task); // issue 12: epochs -> steps, data notes in the log
        foreach (var note in task.Notes.Concat(epochNotes))
            this.log(note);
        otherTask = cfg.OtherTask() is { } other ? TaskRegistry.Create(other, cfg.DatasetSeed, cfg.Task) : null;
        // a folder's vocabulary (issue 12) must cover the task; a fresh model gets the task's compact vocabulary
        codec = ModelSetup.Codec(cfg.Model, task, otherTask, enableThinking: cfg.Task.EnableThinking, log: this.log);
        evaluator = new Evaluator(
            codec,
            task.Eval,
            task.EvalVerifiers,
            new EvalOptions
            {
                MaxNewTokens = cfg.Grpo.MaxCompletionLength,
                Temperature = cfg.Grpo.Temperature,
                TopP = cfg.Grpo.TopP,
                TopK = cfg.Grpo.TopK,
                MaxLength = cfg.Sft.MaxLength,
                Seed = 4242,
            }
        )
        {
            OtherTask = otherTask?.HeldOutBase,
            Memoize = device.type == TorchSharp.DeviceType.CPU, // EvalMemo.cs: same inputs, same numbers on CPU
        };
    }

    /// <summary>runs/&lt;yyyyMMdd-HHmmss&gt;-&lt;name&gt;, with a suffix if that exists: a run never overwrites
    /// another. The folder is created (claimed atomically), so concurrent runs never share one.</summary>
    public static string NewRunDir(string runsRoot, string name) => RunFolders.Claim(runsRoot, name);

    public IReadOnlyList<long> SeedList =>
        Enumerable.Range(0, cfg.Seeds).Select(i => (long)(cfg.SeedBase + i)).ToList();

    public Dictionary<string, List<SeedResult>> Run(IReadOnlyList<string> pipelines)
    {
        foreach (var p in pipelines)
            ExperimentConfig.Resolve(p);
        cfg.ValidateFor(pipelines);
        // stages shared with sft-then-rl are reused when it runs first
        pipelines = pipelines.OrderBy(p => p == "sft-then-rl" ? 0 : 1).ToList();
        planned = pipelines;
        Directory.CreateDirectory(runDir);
        // a folder that has seeds.json was started before: this session resumes it and keeps the first one's records
        session = File.Exists(Path.Combine(runDir, "seeds.json")) ? NextSession() : 1;
        WriteRunFiles(pipelines, session);
        var perSeed = new Dictionary<string, SeedResult>[SeedList.Count];
        var seconds = new Dictionary<string, double>[SeedList.Count];
        var wall = System.Diagnostics.Stopwatch.StartNew();
        ForEachSeed(
            (i, seed) =>
            {
                var sw = System.Diagnostics.Stopwatch.StartNew();
                var baseDir = BaseModel(seed);
                perSeed[i] = new();
                seconds[i] = new() { ["base"] = sw.Elapsed.TotalSeconds };
                // in order: the pipelines that reuse sft-then-rl's stages come after it
                try
                {
                    foreach (var p in pipelines)
                    {
                        log($"[{p} seed {seed}]");
                        sw.Restart();
                        perSeed[i][p] = RunPipeline(p, seed, baseDir);
                        seconds[i][p] = sw.Elapsed.TotalSeconds;
                    }
                }
                finally
                {
                    for (int s = 0; s < 100; s++) // the seed's stage seeds (seed·100 + stage index)
                        if (recordings.TryRemove(seed * 100 + s, out var r))
                            r.Dispose();
                }
            }
        );
        WriteTiming(pipelines, seconds, wall.Elapsed.TotalSeconds, session);
        // again at the end: the allocator and huge-page states change when the first large model is built
        WriteVersions(session);
        return pipelines.ToDictionary(p => p, p => perSeed.Select(d => d[p]).ToList());
    }

    /// <summary>timing.json: where this session's wall time went, per seed and pipeline (a pipeline that reuses
    /// sft-then-rl's stages counts only its own; a resumed or cached stage counts what was left). Kept out of
    /// summary.json so that the numbers there are the same on every run of the same config. A resumed session writes
    /// timing-2.json (and versions-2.json), timing-3.json, ... so the first session's records are never
    /// overwritten.</summary>
    void WriteTiming(IReadOnlyList<string> pipelines, Dictionary<string, double>[] seconds, double wall, int session)
    {
        var names = new[] { "base" }.Concat(pipelines).ToList();
        var o = new JsonObject
        {
            ["wall_seconds"] = Math.Round(wall, 1),
            ["jobs"] = cfg.ResolvedJobs,
            ["seconds_per_seed"] = new JsonObject(
                names.Select(n =>
                    KeyValuePair.Create(
                        n,
                        (JsonNode?)new JsonArray(seconds.Select(d => (JsonNode?)Math.Round(d[n], 1)).ToArray())
                    )
                )
            ),
        };
        if (session > 1)
            o["resumed"] = true;
        if (!reused.IsEmpty) // their seconds are the copy's, not training's
            o["reused"] = new JsonObject(
                reused
                    .OrderBy(kv => kv.Key, StringComparer.Ordinal)
                    .Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))
            );
        var file = SessionFile("timing", session);
        AtomicFile.WriteAllText(file, o.ToJsonString(new() { WriteIndented = true }));
        log(
            $"wall time {wall:F0} s ({Path.GetFileName(file)}); seconds per seed: "
                + string.Join(", ", names.Select(n => $"{n} {seconds.Average(d => d[n]):F0}"))
        );
    }

    /// <summary>Runs <paramref name="body"/>(index, seed) for every seed, config jobs at a time. Seeds share nothing
    /// but the read-only task data (all randomness is seeded per stage), so the order of completion does not matter.
    /// </summary>
    public void ForEachSeed(Action<int, long> body)
    {
        var seeds = SeedList;
        int jobs = cfg.ResolvedJobs,
            before = get_num_threads();
        set_num_threads(cfg.ThreadsPerSeed);
        log($"{seeds.Count} seed(s), {jobs} at a time, {cfg.ThreadsPerSeed} torch thread(s) each");
        try
        {
            Parallel.For(0, seeds.Count, new ParallelOptions { MaxDegreeOfParallelism = jobs }, i => body(i, seeds[i]));
        }
        catch (AggregateException e) when (e.InnerExceptions.Count > 0)
        {
            // a seed's error is the run's error, as it is when seeds run one at a time
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
        }
        finally
        {
            set_num_threads(before);
        }
    }

    /// <summary>Runs the pipelines, then writes summary.json into the run folder and returns it (report.html is
    /// Reports.Report's, a layer up: RunAndReport).</summary>
    public JsonObject RunAndSummarize(IReadOnlyList<string> pipelines)
    {
        var results = Run(pipelines);
        var summary = Summary.Build(cfg, results, StrictKey, LenientKey, task.Design, Versions(), SeedList);
        summary["skipped_bad_rows"] = task.SkippedBadRows; // task.skip_bad: also a line of the run log
        Summary.Save(runDir, summary);
        return summary;
    }

    /// <summary>The session's own file: timing.json for the first session, timing-2.json for the first resume,
    /// ...</summary>
    string SessionFile(string stem, int session) =>
        Path.Combine(runDir, session == 1 ? $"{stem}.json" : $"{stem}-{session}.json");

    /// <summary>The number of a resumed session: the first k ≥ 2 with neither timing-k.json nor
    /// versions-k.json.</summary>
    int NextSession() =>
        Enumerable
            .Range(2, int.MaxValue - 2)
            .First(k => !File.Exists(SessionFile("timing", k)) && !File.Exists(SessionFile("versions", k)));

    void WriteRunFiles(IReadOnlyList<string> pipelines, int session)
    {
        var cfgPath = Path.Combine(runDir, "config.json");
        if (!File.Exists(cfgPath))
            AtomicFile.WriteAllText(cfgPath, cfg.ToJson());
        WriteVersions(session);
        AtomicFile.WriteAllText(
            Path.Combine(runDir, "seeds.json"),
            JsonSerializer.Serialize(
                new
                {
                    seeds = SeedList,
                    pipelines,
                    dataset_seed = cfg.DatasetSeed,
                    jobs = cfg.ResolvedJobs,
                    torch_threads_per_seed = cfg.ThreadsPerSeed,
                }
            )
        );
        codec.Vocab.Save(Path.Combine(runDir, "vocab.json"));
    }

    void WriteVersions(int session) =>
        AtomicFile.WriteAllText(
            SessionFile("versions", session),
            JsonSerializer.Serialize(Versions(), new JsonSerializerOptions { WriteIndented = true })
        );

    public static Dictionary<string, string> Versions() =>
        new()
        {
            ["workbook"] = typeof(ExperimentRunner).Assembly.GetName().Version?.ToString() ?? "?",
            ["build"] = Build.Value,
            ["torchsharp"] = typeof(TorchSharp.torch).Assembly.GetName().Version?.ToString() ?? "?",
            ["libtorch"] = "2.10.0",
            ["dotnet"] = Environment.Version.ToString(),
            ["os"] = System.Runtime.InteropServices.RuntimeInformation.OSDescription,
            ["threads"] = get_num_threads().ToString(),
            ["device"] = cuda.is_available() ? "cuda" : "cpu",
            ["cpu"] = Devices.CpuKind(),
            // the BLAS path changes the last bits of f32 results: a run records which one it took
            ["mkl_vendor_fix"] = NativeSetup.MklVendorFix,
            // the fused norm kernels change the last bits too (Util/FusedKernels.cs)
            ["fused_kernels"] = FusedKernels.State,
            ["malloc_tuning"] = Memory.State,
            ["huge_pages"] = Memory.HugePages,
            // variables that pick other CPU kernels, and so other roundings
            ["kernel_env"] = string.Join(
                ";",
                KernelVariables
                    .Where(v => Environment.GetEnvironmentVariable(v) is { Length: > 0 })
                    .Select(v => $"{v}={Environment.GetEnvironmentVariable(v)}")
                    .DefaultIfEmpty("none")
            ),
        };

    static readonly string[] KernelVariables =
    [
        "ATEN_CPU_CAPABILITY",
        "MKL_CBWR",
        "MKL_ENABLE_INSTRUCTIONS",
        "DNNL_MAX_CPU_ISA",
        "MKL_DEBUG_CPU_TYPE",
    ];

    /// <summary>The first 16 hex digits of Workbook.Core.dll's SHA-256: which code computed a run (deterministic
    /// builds give the same bytes for the same sources).</summary>
    static readonly Lazy<string> Build = new(() =>
    {
        var path = typeof(ExperimentRunner).Assembly.Location;
        if (path.Length == 0 || !File.Exists(path))
            return "unknown";
        using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(f))[..16];
    });

    Qwen3ForCausalLM LoadModel(string dir) => Checkpoint.Load(dir, dtype, device);

    /// <summary>A model folder (base model or checkpoint) in the run's dtype and device.</summary>
    public Qwen3ForCausalLM LoadBase(string dir) => LoadModel(dir);

    /// <summary>Mean reward of a task's held-out expert responses under its RL reward.</summary>
    public double ExpertReward(TaskData t) => EvaluatorFor(t).ExpertReward(t.Reward);

    /// <summary>The model every pipeline of this seed starts from (HF folder).</summary>
    /// <summary>The base model's folder for a seed: the cached one, or trained now and cached.</summary>
    public string BaseModel(long seed)
    {
        if (cfg.Model is not null)
            return cfg.Model;
        RemoveAbandonedBaseWork(cacheRoot);
        var baseData = BaseData();
        var key = BaseCacheKey(baseData);
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)))[..12];
        var dir = Path.Combine(cacheRoot, "base", hash, $"seed-{seed}");
        if (File.Exists(Path.Combine(dir, "done.json")))
        {
            log($"base model (cached): {dir}");
            return dir;
        }
        log($"base model: {cfg.Base.MaxSteps} SFT steps on terse answers (seed {seed}) -> {dir}");
        var work = Path.Combine(
            cacheRoot,
            "base",
            hash,
            WorkFolders.Name("seed", seed.ToString(System.Globalization.CultureInfo.InvariantCulture))
        );
        using (var model = ModelSetup.Model(null, cfg.ModelConfig, codec.Vocab.Size, dtype, device, seed))
        {
            // SftOptions make an SFT trainer, which has no use for the reward
            var options = cfg.Base with
            {
                Seed = seed,
            };
            var tr = Trainers.Create(options, model, codec, baseData, task.Reward, Path.Combine(work, "train"));
            tr.Train();
            Checkpoint.Save(model, work);
        }
        Directory.Delete(Path.Combine(work, "train"), true);
        File.WriteAllText(Path.Combine(work, "done.json"), key);
        // one rename publishes the complete model; if another run published it meanwhile, keep theirs
        if (Directory.Exists(dir) && !File.Exists(Path.Combine(dir, "done.json")))
            Directory.Delete(dir, true);
        try
        {
            Directory.Move(work, dir);
        }
        catch (IOException) when (File.Exists(Path.Combine(dir, "done.json")))
        {
            Directory.Delete(work, true);
        }
        return dir;
    }

    /// <summary>Deletes the work folders of base stages whose process is gone (killed mid-stage): they are named
    /// .tmp-seed-N-PID-GUID, and a live process's folder is left alone (another run may be training it now).</summary>
    public static void RemoveAbandonedWork(string dir) => WorkFolders.RemoveAbandoned(dir, ".tmp-seed-*");

    /// <summary><see cref="RemoveAbandonedWork"/> in every base-model cache folder (runs/.cache/base/*), whatever
    /// the key: a killed base stage of another configuration is cleaned at the next start too.</summary>
    public static void RemoveAbandonedBaseWork(string cacheRoot)
    {
        var root = Path.Combine(cacheRoot, "base");
        if (!Directory.Exists(root))
            return;
        foreach (var d in Directory.GetDirectories(root))
            RemoveAbandonedWork(d);
    }

    /// <summary>The base stage's examples: the task's terse data; with forgetting_task, a forgetting_task_fraction
    /// share of them replaced by the other task's (the first rows of each, so the mix is a function of the
    /// config).</summary>
    public List<Example> BaseData()
    {
        if (otherTask is null)
            return task.Base;
        int n = task.Base.Count,
            nOther = Math.Min(otherTask.Base.Count, (int)Math.Round(cfg.ForgettingTaskFraction * n));
        return [.. task.Base.Take(n - nOther), .. otherTask.Base.Take(nOther)];
    }

    /// <summary>What the cached base model depends on. Without forgetting_task it is the key base models always had, so
    /// existing caches stay valid.</summary>
    public string BaseCacheKey(IReadOnlyList<Example> baseData)
    {
        // the base stage sees only the terse data: key on it (not on the expert mix), so
        // task variants share base models
        var terseText = string.Join(
            "\u0001",
            baseData.Select(e => string.Join("\u0002", e.Prompt.Select(m => m.Content)) + "\u0003" + e.Expert)
        );
        var terse = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(terseText)))[..16];
        var key = JsonSerializer
            .SerializeToNode(
                new
                {
                    cfg.Dataset,
                    cfg.DatasetSeed,
                    terse,
                    shape = cfg.ModelConfig(codec.Vocab.Size),
                    cfg.Base,
                    vocab = codec.Vocab.QwenIds,
                    cfg.Dtype,
                },
                TrainOptions.Json
            )!
            .AsObject();
        // without the new field the key is the one caches had before gradient_checkpointing existed; it is left out
        // because checkpointing recomputes the same forward (gradients equal bit for bit, tested in float32 and
        // float64; not tested in bf16)
        key["base"]!.AsObject().Remove("gradient_checkpointing");
        // a base trained with the fused norm kernels differs in the last bits; without them the key is the one caches
        // had before the kernels existed
        if (FusedKernels.Enabled && dtype == ScalarType.Float32 && device.type == TorchSharp.DeviceType.CPU)
            key["norm_kernel"] = FusedKernels.KernelId;
        if (otherTask is not null)
        {
            key["forgetting_task"] = otherTask.Name;
            key["forgetting_task_fraction"] = cfg.ForgettingTaskFraction;
        }
        return key.ToJsonString(TrainOptions.Json);
    }

    /// <summary>The base cache folder's name for this config (the first 12 hex digits of the key's SHA-256).</summary>
    public string BaseCacheHash() =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(BaseCacheKey(BaseData()))))[..12];

    /// <summary>One stage of a pipeline: what it trains, for how long, on which task and reward; ShareFrom names a
    /// stage of another pipeline that is the same computation (same seed, data and options), reused when it is
    /// done.</summary>
    public sealed record StagePlan(string Name, string Kind, int Steps, TaskData Task, string? ShareFrom = null)
    {
        /// <summary>The GRPO options of this stage when they differ from the config's (the mixed methods).</summary>
        public GrpoOptions? Grpo { get; init; }
    }

    List<StagePlan> Plan(string pipeline)
    {
        int nS = cfg.Sft.MaxSteps,
            nR = cfg.Grpo.MaxSteps,
            R = cfg.InterleaveRounds;
        var sharedSft = new StagePlan("sft", "sft", nS, task, "sft-then-rl");
        return pipeline switch
        {
            "sft-then-rl" => [new("sft", "sft", nS, task), new("rl", "grpo", nR, task)],
            "rl-then-sft" => [new("rl", "grpo", nR, task), new("sft", "sft", nS, task)],
            "interleaved" => Enumerable
                .Range(0, R)
                .SelectMany(r =>
                    new StagePlan[]
                    {
                        new($"round{r + 1}-sft", "sft", nS / R + (r == R - 1 ? nS % R : 0), task),
                        new($"round{r + 1}-rl", "grpo", nR / R + (r == R - 1 ? nR % R : 0), task),
                    }
                )
                .ToList(),
            "joint" => [new("joint", "joint", nS, task)],
            "lenient-reward" => [sharedSft, new("rl", "grpo", nR, LenientTask)],
            "coin-reward" => [sharedSft, new("rl", "grpo", nR, CoinTask(task))],
            "no-format-mix" => [new("sft", "sft", nS, NoMixTask), new("rl", "grpo", nR, NoMixTask)],
            "fresh-optimizer" => [sharedSft, new("sft-more", "sft", nR, task)],
            "sft-anchored" or "chord" or "luffy" or "guarded" =>
            [
                sharedSft,
                new("rl", "grpo", nR, task) { Grpo = MethodOptions(pipeline) },
            ],
            _ => throw new WorkbookException($"unknown pipeline '{pipeline}'"),
        };
    }

    /// <summary>The RL-stage options of a mixed method (issue 14): the config's grpo.* plus the method's
    /// mixing.</summary>
    public GrpoOptions MethodOptions(string method) => MethodOptions(cfg, method);

    public static GrpoOptions MethodOptions(ExperimentConfig cfg, string method) =>
        method switch
        {
            // InstructGPT's ptx / CHORD's fixed weight: L_GRPO + λ·L_SFT, λ constant
            "sft-anchored" => cfg.Grpo with { SftCoef = cfg.AnchorSftCoef, SftMix = "add" },
            // CHORD-μ: (1 − μ)·L_GRPO + μ·L_SFT, μ decayed from chord_mu_start to chord_mu_floor over the stage
            "chord" => cfg.Grpo with
            {
                SftCoef = cfg.ChordMuStart,
                SftMix = "convex",
                SftCoefMin = cfg.ChordMuFloor,
                SftCoefSchedule = cfg.ChordMuSchedule,
            },
            // LUFFY: the expert response as each group's G-th member, policy shaping on its tokens
            "luffy" => cfg.Grpo with { OffPolicyExpert = true, OffPolicyShapingGamma = cfg.LuffyShapingGamma },
            // issue 14 §3: the rule stops the stage; it trains on to the budget only to measure hindsight on the same
            // run, and the pipeline's result is the model kept when the rule fired (the best one up to there)
            "guarded" => cfg.Grpo with
            {
                StopWhen = cfg.Guarded.StopWhen,
                StopCheckSteps = cfg.Guarded.StopCheckSteps,
                StopPatience = cfg.Guarded.StopPatience,
                StopRestoreBest = cfg.Guarded.StopRestoreBest,
                StopHindsight = true,
            },
            _ => throw new WorkbookException($"pipeline {method}: not a mixed method"),
        };

    TaskData? lenientTask;
    public ExperimentConfig Config => cfg;

    // seeds run on parallel threads (config jobs): the task variants and evaluators below are built once, under a lock
    readonly Lock gate = new();

    /// <summary>The task with the lenient verifier as the RL reward (the same data).</summary>
    TaskData LenientTask
    {
        get
        {
            lock (gate)
                return lenientTask ??= task with
                {
                    Reward = task.EvalVerifiers[^1],
                    ExpertReward = task.ExpertReward is null ? null : 1.0,
                };
        }
    }

    /// <summary>The task with a fair coin as the RL reward (the null control: the optimum is the reference policy).
    /// The coin holds no state (each trainer draws its own seeded coins), so the variant is shared freely.</summary>
    public static TaskData CoinTask(TaskData t) => t with { Reward = new CoinReward(), ExpertReward = 0.5 };

    /// <summary>The task with every expert response in the strict form (same prompts, labels and rationales).</summary>
    TaskData NoMixTask => TaskWithLooseFraction(0);

    readonly Dictionary<double, TaskData> variants = new();

    /// <summary>The task with another share of natural-words expert responses (same prompts, labels and
    /// rationales).</summary>
    public TaskData TaskWithLooseFraction(double f)
    {
        if (f == cfg.Task.LooseFormatFraction)
            return task;
        lock (gate)
        {
            if (!variants.TryGetValue(f, out var t))
            {
                t = TaskRegistry.Create(cfg.Dataset, cfg.DatasetSeed, cfg.Task with { LooseFormatFraction = f });
                // the codec's vocabulary was built from the main task: check it covers the variant's text
                foreach (var e in t.Train.Concat(t.Eval).Take(400))
                    codec.Sft(e);
                variants[f] = t;
            }
            return t;
        }
    }

    readonly Dictionary<TaskData, Evaluator> evaluators = new(ReferenceEqualityComparer.Instance);

    /// <summary>The guarded pipeline's fresh prompts (guarded.confirm_size), scored as the held-out ones are.</summary>
    Evaluator ConfirmEvaluator
    {
        get
        {
            lock (gate)
                return confirmEvaluator ??= new Evaluator(
                    codec,
                    // a compact vocabulary (a fresh model) covers the task's own text: a fresh prompt with a word
                    // outside it is passed over (the vocabulary, and so the model, stay those of every other run)
                    ExperimentConfig.ConfirmExamples(cfg, task, Encodable),
                    task.EvalVerifiers,
                    evaluator.Options
                )
                {
                    Memoize = evaluator.Memoize,
                };
        }
    }
    Evaluator? confirmEvaluator;

    bool Encodable(Example e)
    {
        try
        {
            codec.Sft(e);
            codec.Prompt(e);
            return true;
        }
        catch (WorkbookException)
        {
            return false;
        }
    }

    /// <summary>Held-out evaluation on the task's own expert data (same prompts for every variant of the
    /// task).</summary>
    Evaluator EvaluatorFor(TaskData t)
    {
        if (t.Eval == task.Eval)
            return evaluator;
        lock (gate)
        {
            if (!evaluators.TryGetValue(t, out var e))
                evaluators[t] = e = new Evaluator(codec, t.Eval, t.EvalVerifiers, evaluator.Options)
                {
                    OtherTask = evaluator.OtherTask,
                    Memoize = evaluator.Memoize,
                };
            return e;
        }
    }

    SeedResult RunPipeline(string pipeline, long seed, string baseDir)
    {
        var seedDir = Path.Combine(runDir, pipeline, $"seed-{seed}");
        var plan = Plan(pipeline);
        if (Reuse && ReuseUnit(pipeline, seed, plan) is { } donor)
            log($"{pipeline}/seed-{seed}: reused from {donor} (same config, code and machine)");
        Directory.CreateDirectory(seedDir);
        var model = LoadModel(baseDir);
        var stages = new List<StageInfo>();
        var curve = new List<EvalPoint>();
        C1Prediction? predicted = null;
        StopRun? stop = null;
        long global = 0;
        string? previousDir = null; // the folder of the stage whose model this one starts from
        for (int i = 0; i < plan.Count; i++)
        {
            var st = plan[i];
            var dir = Path.Combine(seedDir, $"{i + 1}-{st.Name}");
            var shared = st.ShareFrom is null
                ? null
                : Path.Combine(runDir, st.ShareFrom, $"seed-{seed}", $"{i + 1}-{st.Name}");
            if (shared is not null && File.Exists(Path.Combine(shared, "done.json")))
                dir = shared;
            // the prediction for an RL stage that follows SFT: from the SFT policy (GRPO's
            // reference) and the stage's reward
            if (
                i > 0
                && st.Kind == "grpo"
                && plan[i - 1].Kind == "sft"
                && plan.Count == 2
                && cfg.Grpo.Beta > 0
                && cfg.C1Samples > 0
            )
                // after a shared SFT stage with the main task's reward the prediction is the sharing pipeline's
                predicted = CachedPrediction(
                    plan[i - 1].ShareFrom is { } from && st.Task == task
                        ? Path.Combine(runDir, from, $"seed-{seed}")
                        : seedDir,
                    model,
                    st.Task,
                    (st.Grpo ?? cfg.Grpo).Beta,
                    seed,
                    previousDir
                );
            model = RunStage(
                model,
                dir,
                st,
                pipeline,
                seed * 100 + i,
                pipeline == "interleaved" ? st.Steps : Math.Max(1, st.Steps / cfg.EvalsPerStage),
                $"{pipeline}/seed-{seed}/{st.Name}"
            );
            stages.Add(new StageInfo(st.Name, st.Kind, global, st.Steps) { NoRewardSignal = NoRewardSignal(dir) });
            var stopped = StopRunOf(dir, st);
            stop ??= stopped;
            // a stage that stopped: its result is the model at the stopping step; later evaluations are hindsight only
            foreach (var (step, m) in EvalPoints(dir))
                if (stopped is null || step <= stopped.Result)
                    curve.Add(new EvalPoint(global + step, i, st.Kind, m));
            global += st.Steps;
            previousDir = dir;
        }
        model.Dispose();
        return new SeedResult(seed, stages, curve, predicted?.Mean) { Prediction = predicted, Stop = stop };
    }

    string? ReuseUnit(string pipeline, long seed, List<StagePlan> plan)
    {
        lock (gate)
            donors ??= FindDonors();
        var from = UnitReuse.TryCopy(
            donors,
            runDir,
            pipeline,
            seed,
            plan.Select((st, i) => ($"{i + 1}-{st.Name}", st.ShareFrom)).ToList()
        );
        if (from is not null)
            reused[$"{pipeline}/seed-{seed}"] = from;
        return from;
    }

    /// <summary>The finished runs whose units this run may copy (once per run), or none, saying why.</summary>
    List<string> FindDonors()
    {
        if (device.type != TorchSharp.DeviceType.CPU)
        {
            log($"reuse: off on {device.type} (same seed gives the same numbers only on CPU)");
            return [];
        }
        // the BLAS path is recorded once MKL has chosen it: choose now, so that this run's versions.json says what a
        // finished donor's says
        using (no_grad())
        using (var a = ones(64, 64))
        using (var b = a.matmul(a)) { }
        WriteVersions(session);
        if (UnitReuse.WhyNone(runDir) is { } why)
        {
            log($"reuse: {why}");
            return [];
        }
        return UnitReuse.Donors(runsRoot, runDir);
    }

    /// <summary>Trains one stage into <paramref name="dir"/> (or resumes it, or loads it when done) and returns the
    /// model at its end. Public for the sweep, which runs stages of its own.</summary>
    public Qwen3ForCausalLM RunStage(
        Qwen3ForCausalLM model,
        string dir,
        StagePlan st,
        string pipeline,
        long stageSeed,
        int evalEvery,
        string label,
        GrpoOptions? grpo = null
    )
    {
        if (File.Exists(Path.Combine(dir, "done.json")))
        {
            model.Dispose();
            var stopped = Path.Combine(dir, NoSignalModel);
            var kept = Path.Combine(dir, GrpoTrainer.StoppedModelDir); // issue 14: the model at the stopping step
            return LoadModel(
                Directory.Exists(stopped) ? stopped
                : Directory.Exists(kept) ? kept
                : TrainerCheckpoint.Latest(dir)
                    ?? throw new WorkbookException($"{dir}: marked done but has no checkpoint")
            );
        }
        bool resume = File.Exists(Path.Combine(dir, "metrics.jsonl"));
        var ev = EvaluatorFor(st.Task);
        var g = (grpo ?? st.Grpo ?? cfg.Grpo) with { MaxSteps = st.Steps, Seed = stageSeed, EvalSteps = evalEvery };
        TrainOptions options = st.Kind switch
        {
            "sft" => cfg.Sft with { MaxSteps = st.Steps, Seed = stageSeed, EvalSteps = evalEvery },
            "grpo" => g,
            _ => cfg.JointStageOptions(st.Steps, stageSeed, evalEvery),
        };
        var trainer = Trainers.Create(options, model, codec, st.Task.Train, st.Task.Reward, dir, ev);
        using var replay = WireReplay(trainer, pipeline, st, g, stageSeed, label, model);
        if (trainer is GrpoTrainer guard && pipeline == "guarded" && cfg.Guarded.ConfirmSize > 0)
            guard.ConfirmEval = ConfirmEvaluator;
        Theory.GradientAlignment.AttachIfAsked(trainer, options);
        trainer.LogFields["stage"] = st.Name;
        trainer.OnLog += (s, m) => OnMetrics?.Invoke(label, s, m);
        try
        {
            trainer.Train(resume);
            if (trainer.ReplayFrom is { } from)
                log(
                    trainer.Replayed
                        ? $"{label}: replayed {from.Source}'s steps (the same trajectory; evaluations and the stop "
                            + "rule ran on its models)"
                        : $"{label}: trained (the record of {from.Source} could not be replayed exactly)"
                );
        }
        catch (NoRewardSignalException e)
        {
            // the stage ends here, says so, and the pipeline goes on from the unchanged model
            log($"{label}: {e.Message}");
            Checkpoint.Save(model, Path.Combine(dir, NoSignalModel));
            MarkDone(
                dir,
                JsonSerializer.Serialize(
                    new
                    {
                        steps = e.Steps,
                        kind = st.Kind,
                        no_reward_signal = true,
                        planned_steps = st.Steps,
                    }
                )
            );
            return model;
        }
        if (trainer is GrpoTrainer stopper && g.StopWhen is not null) // issue 14: where the rule stopped the stage
        {
            bool kept = stopper.KeepBestAtEnd();
            MarkDone(
                dir,
                JsonSerializer.Serialize(
                    new
                    {
                        steps = st.Steps,
                        kind = st.Kind,
                        stop_when = g.StopWhen,
                        stop_check_steps = g.StopCheckSteps,
                        stopped_at = stopper.StoppedAt ?? st.Steps,
                        fired = stopper.StoppedAt is not null,
                        predicted_step = stopper.PredictedBeforeStop,
                        planned_steps = st.Steps,
                        hindsight = g.StopHindsight,
                        patience = g.StopPatience,
                        restore_best = g.StopRestoreBest,
                        result_step = g.StopRestoreBest ? stopper.BestStep : stopper.StoppedAt ?? st.Steps,
                    }
                )
            );
            stopper.DropBestCandidates();
            log(
                $"{label}: stop rule '{g.StopWhen}' "
                    + (stopper.StoppedAt is { } at ? $"stopped at step {at} of {st.Steps}" : "did not fire")
                    + (
                        g.StopRestoreBest
                            ? $"; its result is the model of step {stopper.BestStep}, the best evaluated"
                            : ""
                    )
            );
            if (kept)
            {
                model.Dispose();
                return LoadModel(Path.Combine(dir, GrpoTrainer.StoppedModelDir));
            }
            return model;
        }
        MarkDone(dir, JsonSerializer.Serialize(new { steps = st.Steps, kind = st.Kind }));
        return model;
    }

    IReadOnlyList<string> planned = [];

    /// <summary>Trajectories recorded for a later stage to replay, by stage seed (StageReplay.cs).</summary>
    readonly System.Collections.Concurrent.ConcurrentDictionary<long, StageRecording> recordings = new();

    /// <summary>The most the weights a record keeps may take (a model's parameters times the steps kept).</summary>
    const long RecordBytes = 1L << 30;

    /// <summary>Issue 13: guarded's RL stage trains as sft-then-rl's does (the same start model, data, reward, seed
    /// and trajectory options), so sft-then-rl's records its trajectory and guarded's replays it (StageReplay.cs).
    /// Returns the record that this stage replays (to dispose after it), else null.</summary>
    StageRecording? WireReplay(
        ITrainer trainer,
        string pipeline,
        StagePlan st,
        GrpoOptions g,
        long stageSeed,
        string label,
        Qwen3ForCausalLM model
    )
    {
        if (st.Kind != "grpo" || device.type != TorchSharp.DeviceType.CPU || st.Task != task)
            return null;
        if (pipeline == "sft-then-rl" && planned.Contains("guarded"))
        {
            var follower = MethodOptions("guarded") with
            {
                MaxSteps = g.MaxSteps,
                Seed = g.Seed,
                EvalSteps = g.EvalSteps,
            };
            var reads = StageRecording.ModelReads(follower);
            long bytes = model.parameters().Sum(p => p.NumberOfElements * p.ElementSize) * reads.Count;
            if (StageRecording.Trajectory(follower) == StageRecording.Trajectory(g) && bytes <= RecordBytes)
            {
                trainer.RecordInto = new StageRecording(label, reads);
                if (recordings.TryRemove(stageSeed, out var stale)) // a stage run again in this process
                    stale.Dispose();
                recordings[stageSeed] = trainer.RecordInto;
            }
            return null;
        }
        if (pipeline != "guarded" || !recordings.TryRemove(stageSeed, out var rec))
            return null;
        trainer.ReplayFrom = rec;
        return rec;
    }

    /// <summary>Marks a stage finished (done.json holds its record) and drops its checkpoints' optimizer state: a
    /// finished stage never resumes and every stage starts a fresh optimizer, so the moments are dead weight on disk
    /// (at 0.6B in bf16, 7.2 of a checkpoint's 8.3 GB).</summary>
    static void MarkDone(string dir, string record)
    {
        File.WriteAllText(Path.Combine(dir, "done.json"), record);
        TrainerCheckpoint.DropOptimizerState(dir);
    }

    /// <summary>The stop rule's record of a finished stage folder (null: the stage had no rule).</summary>
    StopRun? StopRunOf(string dir, StagePlan st)
    {
        var done = Path.Combine(dir, "done.json");
        if (!File.Exists(done) || JsonNode.Parse(File.ReadAllText(done)) is not JsonObject d || d["stop_when"] is null)
            return null;
        int k = d["stop_check_steps"]!.GetValue<int>();
        long planned = d["planned_steps"]!.GetValue<long>();
        var rows = MetricsLog.Read(Path.Combine(dir, "metrics.jsonl")).ToList();
        var reward = $"rewards/{st.Task.Reward.Name}/mean";
        // the rule's evaluations (eval_*) or the fresh prompts' (confirm_*) at the steps where the rule could stop
        List<StopEval> At(string prefix) =>
            rows.Where(o => o.ContainsKey(prefix + "sft_loss") && o[prefix + reward] is JsonValue)
                .Select(o => new StopEval(
                    o["step"]!.GetValue<long>(),
                    o[prefix + reward]!.GetValue<double>(),
                    o[prefix + "sft_loss"]!.GetValue<double>()
                ))
                .Where(e => e.Step % k == 0 || e.Step == planned)
                .ToList();
        var evals = At("eval_");
        return new StopRun(
            d["stop_when"]!.GetValue<string>(),
            k,
            d["stopped_at"]!.GetValue<long>(),
            d["fired"]!.GetValue<bool>(),
            d["predicted_step"]?.GetValue<long>(),
            planned,
            evals
        )
        {
            Patience = d["patience"]?.GetValue<int>() ?? 1,
            RestoreBest = d["restore_best"]?.GetValue<bool>() ?? false,
            ResultStep = d["result_step"]?.GetValue<long>(),
            Confirm = At("confirm_"),
        };
    }

    const string NoSignalModel = "no-signal-model";

    /// <summary>Whether a finished stage stopped for lack of reward signal.</summary>
    public static bool NoRewardSignal(string dir) =>
        File.Exists(Path.Combine(dir, "done.json"))
        && JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "done.json")))?["no_reward_signal"]?.GetValue<bool>()
            == true;

    /// <summary>The evaluation rows of a stage folder: (step within the stage, eval_* metrics).</summary>
    public static IEnumerable<(long Step, Dictionary<string, double> Metrics)> EvalPoints(string dir) =>
        MetricsLog
            .Read(Path.Combine(dir, "metrics.jsonl"))
            .Where(o => o.ContainsKey("eval_sft_loss"))
            .Select(o =>
                (
                    o["step"]!.GetValue<long>(),
                    o.Where(kv => kv.Key.StartsWith("eval_") && kv.Key != "eval_runtime" && kv.Value is JsonValue)
                        .ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<double>())
                )
            );

    /// <summary>Theorem 3.1's predicted SFT-loss rise (nats per response) for RL with <paramref name="t"/>'s reward
    /// from <paramref name="model"/>, cached in the pipeline's seed folder. <paramref name="modelDir"/>: the folder of
    /// the stage that made the model, whose samples another prediction from that stage (another reward) reuses.
    /// </summary>
    public C1Prediction CachedPrediction(
        string seedDir,
        Qwen3ForCausalLM model,
        TaskData t,
        double beta,
        long seed,
        string? modelDir = null
    )
    {
        var path = Path.Combine(
            seedDir,
            // v5: with the per-prompt counts; v4: bias-corrected, basic bootstrap interval; v3: the data term scored
            // on the held-out responses (v2: the task's nominal mix); the counts are the same in every version
            $"prediction-v5-beta{beta.ToString(System.Globalization.CultureInfo.InvariantCulture)}.json"
        );
        if (t.Reward is CoinReward coin) // E[r|x,y] = p for every y: p* is the reference, the rise exactly 0
            return new C1Prediction(
                0,
                [0, 0],
                coin.P / beta,
                coin.P / beta,
                beta,
                t.Eval.Count,
                0,
                coin.P,
                "exact: the coin's expected reward is the same for every response",
                coin.P,
                coin.P,
                0
            );
        if (File.Exists(path))
            return JsonSerializer.Deserialize<C1Prediction>(File.ReadAllText(path), TrainOptions.Json)!;
        var ev = EvaluatorFor(t);
        var counts = ev.SuccessCounts(Samples(ev, model, modelDir, cfg.C1Samples, seed * 7 + 1), [t.Reward])[0];
        // The data term is scored on the very held-out responses the rise is measured on: the task's mix holds only
        // in expectation, and with 128 responses the realised strict share varies by ±0.04 (±0.17 nats at β 0.25).
        double dataReward = ev.ExpertReward(t.Reward);
        string source =
            $"scored on the {t.Eval.Count} held-out expert responses the rise is measured on"
            + (t.ExpertReward is { } mix ? $" (the task's mix gives {Summary.Short(mix)} in expectation)" : "");
        var p = C1Predictor.FromCounts(counts, cfg.C1Samples, beta, dataReward, source, seed: (int)seed);
        AtomicFile.WriteAllText(path, JsonSerializer.Serialize(p, TrainOptions.Json));
        return p;
    }

    /// <summary>The prediction's samples of a stage's model, kept for the run: a control that starts from the same
    /// stage with another reward (lenient-reward after sft-then-rl's SFT) scores the same texts instead of drawing
    /// them again. The same model, prompts, k and seed draw the same texts, so the counts are those of a fresh draw.
    /// </summary>
    string[][] Samples(Evaluator ev, Qwen3ForCausalLM model, string? modelDir, int k, long seed)
    {
        if (modelDir is null)
            return ev.SamplesPerPrompt(model, k, seed);
        var key = (Path.GetFullPath(modelDir), k, seed);
        lock (gate)
            if (predictionSamples.TryGetValue(key, out var kept) && kept.Prompts.SequenceEqual(ev.Prompts, SameIds))
                return kept.Texts;
        var texts = ev.SamplesPerPrompt(model, k, seed);
        lock (gate)
            predictionSamples[key] = (ev.Prompts, texts);
        return texts;
    }

    readonly Dictionary<
        (string Dir, int K, long Seed),
        (IReadOnlyList<int[]> Prompts, string[][] Texts)
    > predictionSamples = [];

    static readonly IEqualityComparer<int[]> SameIds = EqualityComparer<int[]>.Create(
        (a, b) => a is not null && b is not null && a.AsSpan().SequenceEqual(b),
        a => a.Length
    );

    /// <summary>Per held-out prompt, the successes of k = c1_samples samples of a finished RL policy under the strict
    /// and the lenient reward, from one set of samples (cached in <paramref name="dir"/>): where RL fell short of
    /// p*'s reward, and whether the label or the format is missing there (Sweep.Shortfall).</summary>
    public ReachedCounts CachedReachedCounts(string dir, Qwen3ForCausalLM model, TaskData t, long seed)
    {
        var path = Path.Combine(dir, "reached-successes.json");
        if (File.Exists(path))
            return JsonSerializer.Deserialize<ReachedCounts>(File.ReadAllText(path), TrainOptions.Json)!;
        var c = EvaluatorFor(t).SuccessCounts(model, [t.Reward, t.EvalVerifiers[^1]], cfg.C1Samples, seed * 7 + 2);
        var r = new ReachedCounts(cfg.C1Samples, c[0], c[1]);
        AtomicFile.WriteAllText(path, JsonSerializer.Serialize(r, TrainOptions.Json));
        return r;
    }
}

/// <summary>Per held-out prompt, successes of K samples under the strict and the lenient reward.</summary>
public sealed record ReachedCounts(int K, int[] Strict, int[] Lenient)
{
    /// <summary>The strict reward over every prompt and sample (derived, so not written to the file).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public double StrictRate => Strict.Average() / K;
}
