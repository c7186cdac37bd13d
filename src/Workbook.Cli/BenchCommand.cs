using System.ComponentModel;
using System.Reflection;
using System.Text.Json;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Bench;
using Workbook.Data;
using Workbook.Model;
using Workbook.Text;
using Workbook.Training;

namespace Workbook.Cli;

/// <summary>`workbook bench`: speed on the peer's definitions. The model options are <see cref="ModelSettings"/>'s
/// with the same defaults (the tiny preset, f32, auto): train and generate measure the preset (at --vocab) or the
/// shapes of --model's config.json (random weights: speed depends on the shapes only); grpo trains the preset at the
/// grammar task's vocabulary. A case that has no use for an option refuses it by name, and bench measures the CPU
/// only, so a --device that resolves to anything else is refused.</summary>
public sealed class BenchCommand : Command<BenchCommand.Settings>
{
    public const int MaxVocab = 151936; // Qwen3's embedding rows: the largest vocabulary a preset can take

    public sealed class Settings : ModelSettings
    {
        [CommandArgument(0, "<WHAT>")]
        [Description("gemm, train, generate, grpo, tokenizer or all")]
        public string What { get; init; } = "";

        [CommandOption("--vocab <N>")]
        [Description("train, generate: the preset's vocabulary size (default: the preset's own; at most 151936)")]
        public int? Vocab { get; init; }

        [CommandOption("--batch <N>")]
        [Description("train, all: training batch (tokens per step = batch x seq; default 8)")]
        public int? Batch { get; init; }

        [CommandOption("--seq <N>")]
        [Description("train, all: training sequence length in tokens (default 256)")]
        public int? Seq { get; init; }

        [CommandOption("--steps <N>")]
        [Description("train, all: timed training steps (default 10)")]
        public int? Steps { get; init; }

        [CommandOption("--warmup <N>")]
        [Description("train, all: untimed training steps first (default 3)")]
        public int? Warmup { get; init; }

        [CommandOption("--repeats <N>")]
        [Description(
            "generate, all: timed generation runs per batch size, the median reported (default 3); sampled against "
                + "greedy: this many alternating pairs, rounded up to an even number of at least 6"
        )]
        public int? Repeats { get; init; }

        [CommandOption("--gen-batch <N>")]
        [Description("generate, all: this batch only, greedy and sampled (default: 1 and 8, and the KV latency)")]
        public int? GenBatch { get; init; }

        [CommandOption("--clip <NORM>")]
        [Description("train, all: gradient clipping in the training step (default 0 = off, as the peer)")]
        public double? Clip { get; init; }

        [CommandOption("--memory-steps <N>")]
        [Description("train, all: extra steps to measure RSS growth (default 0 = skip)")]
        public int? MemorySteps { get; init; }

        [CommandOption("--machine-peak <GFLOPS>")]
        [Description(
            "gemm, train, all: stated machine GEMM peak for MFU (default: tuned PyTorch on this machine type)"
        )]
        public double? MachinePeak { get; init; }

        [CommandOption("--size <N>")]
        [Description("gemm: the square product's side n (default 2048; 2n³ FLOP per product)")]
        public int? Size { get; init; }

        [CommandOption("--text <FILE>")]
        [Description("tokenizer, all: also measure on this text file")]
        public string? Text { get; init; }

        [CommandOption("--out <FILE>")]
        [Description("Also write the JSON here (atomically)")]
        public string? Out { get; init; }

        [CommandOption("--json")]
        [Description("Print the JSON instead of the aligned key-value lines")]
        public bool Json { get; init; }

        /// <summary>The cases that `bench all` runs (it measures the GEMM peak inside train).</summary>
        public static readonly string[] AllCases = ["train", "grpo", "generate", "tokenizer"];

        /// <summary>The case-specific options and the cases that use them; a case that does not use one refuses it
        /// before anything is measured. `bench all` takes an option when one of its cases uses it (that case honours
        /// it). The other options apply to every case or have their own rules in <see cref="Unused"/>: the model
        /// options and --vocab (by what the case measures), --device (the CPU only), --out and --json.</summary>
        public static readonly IReadOnlyDictionary<string, string[]> CaseOptions = new Dictionary<string, string[]>
        {
            ["--batch"] = ["train"],
            ["--seq"] = ["train"],
            ["--steps"] = ["train"],
            ["--warmup"] = ["train"],
            ["--clip"] = ["train"],
            ["--memory-steps"] = ["train"],
            ["--machine-peak"] = ["gemm", "train"],
            ["--repeats"] = ["generate"],
            ["--gen-batch"] = ["generate"],
            ["--size"] = ["gemm"],
            ["--text"] = ["tokenizer"],
        };

        // the defaults of the case options (unchanged, so the measured numbers are too)
        public const int DefaultBatch = 8;
        public const int DefaultSeq = 256;
        public const int DefaultSteps = 10;
        public const int DefaultWarmup = 3;
        public const int DefaultRepeats = 3;
        public const int DefaultMemorySteps = 0;
        public const double DefaultClip = 0;

        public int BatchOrDefault => Batch ?? DefaultBatch;
        public int SeqOrDefault => Seq ?? DefaultSeq;
        public int StepsOrDefault => Steps ?? DefaultSteps;
        public int WarmupOrDefault => Warmup ?? DefaultWarmup;
        public int RepeatsOrDefault => Repeats ?? DefaultRepeats;
        public int MemoryStepsOrDefault => MemorySteps ?? DefaultMemorySteps;
        public double ClipOrDefault => Clip ?? DefaultClip;

        /// <summary>The cases that use <paramref name="option"/>, with all when one of its cases does.</summary>
        public static IReadOnlyList<string> CasesUsing(string option)
        {
            var cases = CaseOptions[option];
            return cases.Intersect(AllCases).Any() ? [.. cases, "all"] : cases;
        }

        public override ValidationResult Validate()
        {
            if (What is not ("gemm" or "train" or "generate" or "grpo" or "tokenizer" or "all"))
                return ValidationResult.Error(
                    $"bench: unknown '{What}': expected gemm, train, generate, grpo, tokenizer or all"
                );
            foreach (
                var (name, v, min) in new[]
                {
                    ("--batch", Batch, 1),
                    ("--seq", Seq, 2),
                    ("--steps", Steps, 1),
                    ("--warmup", Warmup, 0),
                    ("--repeats", Repeats, 1),
                    ("--memory-steps", MemorySteps, 0),
                    ("--size", Size, 1),
                }
            )
                if (v < min)
                    return ValidationResult.Error($"{name} {v}: must be at least {min}");
            if (Vocab is { } n && (n < 2 || n > MaxVocab))
                return ValidationResult.Error(
                    $"--vocab {n} does not fit preset '{PresetOrDefault}': it must be between 2 and {MaxVocab} "
                        + "(Qwen3's vocabulary)"
                );
            if (GenBatch is { } gb && gb < 1)
                return ValidationResult.Error($"--gen-batch {gb}: must be at least 1");
            if (MachinePeak is { } p && !(p > 0))
                return ValidationResult.Error($"--machine-peak {p}: must be a positive GFLOP/s");
            if (Clip is { } c && !(c >= 0))
                return ValidationResult.Error($"--clip {c}: must be >= 0");
            if (Unused() is { } refused)
                return refused;
            return base.Validate();
        }

        /// <summary>The first option the chosen case has no use for, refused by name.</summary>
        ValidationResult? Unused()
        {
            bool model = What is "train" or "generate" or "grpo" or "all";
            if (!model && (Model ?? Preset) is not null)
                return Refuse(Model is not null ? "--model" : "--preset", $"bench {What} measures no model");
            if (!model && Vocab is not null)
                return Refuse("--vocab", $"bench {What} measures no model");
            if (What is "tokenizer" && DType is not null)
                return Refuse("--dtype", "bench tokenizer measures no tensor arithmetic");
            if (What is "grpo" or "all" && Model is not null)
                return Refuse(
                    "--model",
                    $"bench {What} includes grpo, which trains a preset at the task's vocabulary; use --preset, "
                        + "or bench train / bench generate for a folder's shapes"
                );
            if (What is "grpo" or "all" && Vocab is not null)
                return Refuse(
                    "--vocab",
                    $"bench {What} includes grpo, whose vocabulary is the task's; use bench train / bench generate"
                );
            if (Model is not null && Vocab is not null)
                return Refuse("--vocab", "the --model folder's config.json sets the vocabulary");
            foreach (var (option, given) in Given())
                if (given && !CasesUsing(option).Contains(What))
                    return Refuse(option, $"not used by bench {What} (it applies to {Listed(CasesUsing(option))})");
            return null;
        }

        static string Listed(IReadOnlyList<string> xs) =>
            xs.Count == 1 ? xs[0] : $"{string.Join(", ", xs.Take(xs.Count - 1))} and {xs[^1]}";

        /// <summary>Each case option in declaration order, and whether it was given (not null; a flag: set).</summary>
        IEnumerable<(string Option, bool Given)> Given() =>
            GetType()
                .GetProperties()
                .Select(p => (p, a: p.GetCustomAttribute<CommandOptionAttribute>()))
                .Where(x => x.a is not null)
                .SelectMany(x =>
                    x.a!.LongNames.Select(n => $"--{n}")
                        .Where(CaseOptions.ContainsKey)
                        .Select(o => (o, x.p.GetValue(this) is { } v && !Equals(v, false)))
                );
    }

    public override int Execute(CommandContext context, Settings s)
    {
        var dtype = Devices.ParseDType(s.DTypeOrDefault);
        var device = Devices.Resolve(s.DeviceOrDefault);
        if (device.type != TorchSharp.DeviceType.CPU)
            throw new WorkbookException(
                $"--device {s.DeviceOrDefault}: picks a GPU, and bench measures the CPU only; use --device cpu"
            );
        Devices.CheckDTypeFast(dtype, device.type, "--dtype");
        var cfg = s.Model is not null
            ? Qwen3Config.Load(Path.Combine(s.Model, "config.json"))
            : Qwen3Config.Preset(s.PresetOrDefault!, s.Vocab);
        // before the GEMM peak allocates anything: libtorch reads its huge-page switch at its first allocation
        if (s.What is not ("gemm" or "tokenizer"))
            Memory.ForLargeModel(cfg.ParameterCount());
        var (statedPeak, statedSource) = Benchmarks.StatedMachinePeak(dtype);
        double? machinePeak = s.MachinePeak ?? statedPeak;
        var r = new Dictionary<string, object>
        {
            ["what"] = s.What,
            [s.Model is null ? "preset" : "model"] = s.Model ?? s.PresetOrDefault!,
            ["vocab"] = cfg.VocabSize,
            ["dtype"] = Devices.Name(dtype),
            ["batch"] = s.BatchOrDefault,
            ["seq"] = s.SeqOrDefault,
            ["parameters"] = cfg.ParameterCount(),
            ["threads"] = TorchSharp.torch.get_num_threads(),
            ["machine_peak_source"] = s.MachinePeak is null ? statedSource : "--machine-peak",
            ["native"] = NativeSetup.Status(),
            ["versions"] = Experiments.ExperimentRunner.Versions(),
        };
        if (machinePeak is { } mp) // none stated for this CPU: the source says so, and no machine MFU is written
            r["machine_peak_gflops"] = mp;
        if (s.What is "gemm")
        {
            int n = s.Size ?? 2048;
            double g = Benchmarks.GemmPeakGflops(dtype, n);
            r["gemm_size"] = n;
            r["gemm_peak_gflops"] = g;
            if (machinePeak is { } mp2)
                r["gemm_over_machine_peak"] = g / mp2;
        }
        if (s.What is "train" or "all")
            foreach (
                var (k, v) in Benchmarks.Train(
                    cfg,
                    dtype,
                    s.BatchOrDefault,
                    s.SeqOrDefault,
                    s.StepsOrDefault,
                    s.MemoryStepsOrDefault,
                    machinePeak,
                    s.WarmupOrDefault,
                    s.ClipOrDefault
                )
            )
                r[k] = v;
        if (s.What is "grpo" or "all")
        {
            var task = TaskRegistry.Create("grammar", 0, new TaskOptions { TrainSize = 500, EvalSize = 8 });
            var codec = ModelSetup.Codec(null, task);
            var grpoCfg = Qwen3Config.Preset(s.PresetOrDefault!, codec.Vocab.Size);
            if (s.What is "grpo") // the model measured is this one, not the preset at its own vocabulary
            {
                r["vocab"] = grpoCfg.VocabSize;
                r["parameters"] = grpoCfg.ParameterCount();
            }
            foreach (var (k, v) in Benchmarks.Grpo(grpoCfg, dtype, codec, task, 4))
                r[k] = v;
        }
        if (s.What is "generate" or "all")
            foreach (var (k, v) in Benchmarks.Generate(cfg, dtype, s.RepeatsOrDefault, onlyBatch: s.GenBatch))
                r[k] = v;
        if (s.What is "tokenizer" or "all")
            foreach (var (k, v) in Benchmarks.Tokenizer(TokenizerFiles.EnsureDefault(), s.Text))
                r[k] = v;
        r["peak_rss_mb"] = Benchmarks.PeakRss() / 1e6;
        // as the run left them: a large model changes the allocator setting when it is built
        r["native"] = NativeSetup.Status();
        r["versions"] = Experiments.ExperimentRunner.Versions();
        var json = JsonSerializer.Serialize(r, new JsonSerializerOptions { WriteIndented = true });
        if (s.Out is not null)
            AtomicFile.WriteAllText(s.Out, json);
        if (s.Json)
            Console.WriteLine(json);
        else
            foreach (var (k, v) in r.Where(kv => kv.Key != "versions"))
                AnsiConsole.MarkupLineInterpolated($"{k, -38} {Shown(v)}");
        return 0;
    }

    /// <summary>A measurement as the table shows it: a number to 4 significant digits, a map as key=value
    /// pairs.</summary>
    static object? Shown(object? v) =>
        v is double d ? d.ToString("G4")
        : v is Dictionary<string, string> m ? string.Join("; ", m.Select(x => $"{x.Key}={x.Value}"))
        : v;
}
