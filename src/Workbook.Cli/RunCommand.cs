using System.ComponentModel;
using System.Diagnostics;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Experiments;
using Workbook.Reports;
using Workbook.Training;

namespace Workbook.Cli;

public sealed class RunCommand : Command<RunCommand.Settings>
{
    /// <summary>The model options are <see cref="ModelSettings"/>'s: --model DIR, --dtype and --device go into the
    /// config (model, dtype, device; the same defaults); --preset is refused, since without --model the model is the
    /// config's own small shape (hidden_size, num_hidden_layers, ...), trained from scratch in a base stage.</summary>
    public sealed class Settings : ModelSettings
    {
        [CommandArgument(0, "<EXPERIMENT>")]
        [Description(
            "sft-then-rl, rl-then-sft, interleaved, joint, a control (lenient-reward, no-format-mix, fresh-optimizer), "
                + "a mixed method (sft-anchored, chord, luffy, guarded) or all"
        )]
        public string Experiment { get; init; } = "";

        [CommandOption("--pipelines <LIST>")]
        [Description(
            "With `run all`: the pipelines to run, comma-separated, or all (every pipeline, control and method)"
        )]
        public string? Pipelines { get; init; }

        [CommandOption("--config <FILE>")]
        [Description("Experiment config (JSON, snake_case keys); defaults are the embedded default")]
        public string? Config { get; init; }

        [CommandOption("--set <KEY=VALUE>")]
        [Description("Override a config value, e.g. grpo.beta=0.1 (repeatable; wins over --quick and --config)")]
        public string[] Set { get; init; } = [];

        [CommandOption("--seeds <N>")]
        [Description("Number of training seeds (default 3; wins over --quick)")]
        public int? Seeds { get; init; }

        [CommandOption("--jobs <N>")]
        [Description(
            "Seeds trained at once (default: all seeds for the small model, 1 with --model); same numbers for any N"
        )]
        public int? Jobs { get; init; }

        [CommandOption("--quick")]
        [Description("Small budgets (CI); --config, --set and --seeds still apply on top")]
        public bool Quick { get; init; }

        [CommandOption("--dataset <SPEC>")]
        [Description("grammar (default), arithmetic, cola:FILE, gsm8k:FILE")]
        public string? Dataset { get; init; }

        [CommandOption("--eval-dataset <SPEC>")]
        [Description("cola:FILE: evaluate on a CoLA dev file (raw 4-column or GLUE) instead of held-out training rows")]
        public string? EvalDataset { get; init; }

        [CommandOption("--runs <DIR>")]
        [Description("Folder of run folders (default runs)")]
        public string? Runs { get; init; }

        [CommandOption("--resume <RUN_DIR>")]
        [Description("Continue a killed run on its own config.json (the options that would change it are refused)")]
        public string? Resume { get; init; }

        [CommandOption("--reuse")]
        [Description(
            "Copy each (pipeline, seed) that a finished run in the same runs folder computed with the same config, "
                + "code and machine instead of training it again (timing.json lists them; the notebooks do this)"
        )]
        public bool Reuse { get; init; }

        public override ValidationResult Validate()
        {
            if (Preset is not null)
                return Refuse("--preset", ModelSettings.RunPresetRefusal);
            if (Resume is not null && ResumeRefusal() is { } refused)
                return refused;
            return base.Validate();
        }

        /// <summary>A resumed run uses the config.json of its folder, so an option that would change it is refused
        /// by name (sweep --resume refuses the same ones, and those of its grid).</summary>
        ValidationResult? ResumeRefusal()
        {
            const string config = "a resumed run uses its own config.json; start a new run to change it";
            return RefuseFirstGiven(
                ("--config", Config is not null, config),
                ("--set", Set.Length > 0, config),
                ("--seeds", Seeds is not null, config),
                ("--jobs", Jobs is not null, config),
                ("--quick", Quick, config),
                ("--model", Model is not null, config),
                ("--dataset", Dataset is not null, config),
                ("--eval-dataset", EvalDataset is not null, config),
                ("--dtype", DType is not null, config),
                ("--device", Device is not null, config),
                ("--runs", Runs is not null, "a resumed run stays in its folder, --resume RUN_DIR; drop --runs")
            );
        }
    }

    /// <summary>The config in precedence order: defaults, then --quick's budgets, then the --config file, then --set
    /// and the explicit options. Explicit options always win over presets.</summary>
    public static ExperimentConfig LoadConfig(string? file, bool quick, IEnumerable<string> overrides) =>
        ExperimentConfig.Load(file, overrides, quick ? new ExperimentConfig().Quick() : null);

    public override int Execute(CommandContext context, Settings s)
    {
        ExperimentConfig.Resolve(s.Experiment, s.Pipelines); // names checked before any config file is read
        ExperimentConfig cfg;
        string runDir;
        IReadOnlyList<string> pipelines;
        if (s.Resume is not null)
        {
            if (!File.Exists(Path.Combine(s.Resume, "config.json")))
                throw new WorkbookException($"--resume {s.Resume}: not a run folder (no config.json)");
            cfg = ExperimentConfig.Load(Path.Combine(s.Resume, "config.json"));
            runDir = s.Resume;
            // a resumed `run all` without --pipelines finishes the set its first session started, not today's default
            pipelines =
                s.Experiment == "all" && s.Pipelines is null
                    ? StartedPipelines(s.Resume)
                    : ExperimentConfig.Resolve(s.Experiment, s.Pipelines, cfg);
        }
        else
        {
            var overrides = s.Set.ToList();
            if (s.Seeds is { } n)
                overrides.Add($"seeds={n}");
            if (s.Jobs is { } j)
                overrides.Add($"jobs={j}");
            if (s.Model is not null)
                overrides.Add($"model={System.Text.Json.JsonSerializer.Serialize(s.Model)}");
            if (s.Dataset is not null)
                overrides.Add($"dataset={System.Text.Json.JsonSerializer.Serialize(s.Dataset)}");
            if (s.EvalDataset is not null)
                overrides.Add($"task.eval_file={System.Text.Json.JsonSerializer.Serialize(EvalFile(s))}");
            if (s.Device is not null)
                overrides.Add($"device={System.Text.Json.JsonSerializer.Serialize(s.Device)}");
            if (s.DType is not null)
                overrides.Add($"dtype={System.Text.Json.JsonSerializer.Serialize(s.DType)}");
            cfg = LoadConfig(s.Config, s.Quick, overrides);
            pipelines = ExperimentConfig.Resolve(s.Experiment, s.Pipelines, cfg);
            cfg.ValidateFor(pipelines); // issue 14
            runDir = ExperimentRunner.NewRunDir(s.Runs ?? "runs", (s.Quick ? "quick-" : "") + s.Experiment);
        }
        if (s.Resume is null && s.Experiment == "all" && s.Pipelines is null && cfg.ColaOnSmallModel)
            AnsiConsole.MarkupLine(
                "[grey]"
                    + Markup.Escape(
                        $"real CoLA on the small model: run all defaults to {string.Join(", ", pipelines)} (the mixed "
                            + "and strict-only expert forms side by side); --pipelines all runs every one"
                    )
                    + "[/]"
            );
        try
        {
            return Run(s, cfg, runDir, pipelines);
        }
        catch
        {
            if (s.Resume is null)
                RunFolders.RemoveIfEmpty(runDir);
            throw;
        }
    }

    /// <summary>The pipelines in a run folder's seeds.json (what its first session set out to run).</summary>
    public static IReadOnlyList<string> StartedPipelines(string runDir)
    {
        var path = Path.Combine(runDir, "seeds.json");
        if (!File.Exists(path))
            throw new WorkbookException($"--resume {runDir}: no seeds.json, so the run's pipelines are not known");
        var names = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))?["pipelines"]?.AsArray();
        if (names is null || names.Count == 0)
            throw new WorkbookException($"{path}: no \"pipelines\" list");
        var list = names.Select(n => n!.GetValue<string>()).ToList();
        foreach (var n in list)
            ExperimentConfig.Resolve(n); // a name this version does not know is an error naming it
        return list;
    }

    /// <summary>The file of --eval-dataset cola:FILE (the only evaluation source files have so far).</summary>
    static string EvalFile(Settings s)
    {
        var spec = s.EvalDataset!;
        if (!spec.StartsWith("cola:") || spec.Length == 5)
            throw new WorkbookException($"--eval-dataset {spec}: expected cola:FILE (a CoLA dev file)");
        var file = spec[5..];
        if (!File.Exists(file))
            throw new WorkbookException($"--eval-dataset {spec}: file not found");
        return file;
    }

    static int Run(Settings s, ExperimentConfig cfg, string runDir, IReadOnlyList<string> pipelines)
    {
        var sw = Stopwatch.StartNew();
        Workbook.Data.RowReader.Skipped += Terminal.ReportSkipped;
        // the runner validates the config and loads the data before anything is written: bad input leaves no run folder
        var runner = new ExperimentRunner(
            cfg,
            runDir,
            Path.GetDirectoryName(Path.GetFullPath(runDir))!,
            m => AnsiConsole.MarkupLineInterpolated($"[grey]{m}[/]")
        )
        {
            Reuse = s.Reuse,
        };
        AnsiConsole.MarkupLineInterpolated($"[bold]run folder:[/] {runDir}");
        runner.OnMetrics += (stage, step, m) =>
        {
            if (m.ContainsKey("eval_sft_loss"))
            {
                var eval = MetricsLog.Format(m, "eval_sft_loss", runner.StrictKey, runner.LenientKey);
                AnsiConsole.MarkupLineInterpolated($"  {stage} step {step}: {eval}  [grey]({sw.Elapsed:mm\\:ss})[/]");
            }
            else if (step % LoggingSteps(cfg, stage) == 0)
            {
                var train = MetricsLog.Format(m, "loss", "reward", "kl", "grad_norm");
                AnsiConsole.MarkupLineInterpolated($"[grey]  {stage} step {step}: {train}  ({sw.Elapsed:mm\\:ss})[/]");
            }
        };
        var (summary, report) = runner.RunAndReport(pipelines);
        AnsiConsole.WriteLine();
        foreach (var (name, st) in summary["statements"]!.AsObject())
            AnsiConsole.MarkupLineInterpolated($"[bold]{name}[/]: {st!.GetValue<string>()}");
        AnsiConsole.MarkupLineInterpolated($"[bold]summary:[/] {Path.Combine(runDir, "summary.json")}");
        AnsiConsole.MarkupLineInterpolated($"[bold]report:[/] {report}  [grey](total {sw.Elapsed:mm\\:ss})[/]");
        return 0;
    }

    /// <summary>A training line every logging_steps steps of the stage's options (RL stages: grpo.logging_steps; SFT
    /// and joint stages: sft.logging_steps).</summary>
    static int LoggingSteps(ExperimentConfig cfg, string stage)
    {
        var name = stage[(stage.LastIndexOf('/') + 1)..];
        var n = name == "rl" || name.EndsWith("-rl") ? cfg.Grpo.LoggingSteps : cfg.Sft.LoggingSteps;
        return Math.Max(1, n);
    }
}

public sealed class ReportCommand : Command<ReportCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<RUN_DIR>")]
        [Description("A run folder written by `workbook run` (holds config.json and summary.json)")]
        public string RunDir { get; init; } = "";
    }

    public override int Execute(CommandContext context, Settings s)
    {
        if (!Directory.Exists(s.RunDir))
            throw new WorkbookException($"{s.RunDir}: folder not found");
        if (!File.Exists(Path.Combine(s.RunDir, "config.json")) || !File.Exists(Path.Combine(s.RunDir, "seeds.json")))
            throw new WorkbookException(
                $"{s.RunDir}: not a run folder (no config.json and seeds.json; `workbook run` writes those)"
            );
        AnsiConsole.MarkupLineInterpolated($"report: {Report.Write(s.RunDir)}");
        return 0;
    }
}
