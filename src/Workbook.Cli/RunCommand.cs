using System.ComponentModel;
using System.Diagnostics;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Experiments;
using Workbook.Training;

namespace Workbook.Cli;

public sealed class RunCommand : Command<RunCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<EXPERIMENT>")][Description("sft-then-rl, rl-then-sft, interleaved, joint, a control (lenient-reward, no-format-mix, fresh-optimizer) or all")]
        public string Experiment { get; init; } = "";
        [CommandOption("--config <FILE>")][Description("Experiment config (JSON, snake_case keys); defaults are the embedded default")]
        public string? Config { get; init; }
        [CommandOption("--set <KEY=VALUE>")][Description("Override a config value, e.g. grpo.beta=0.1 (repeatable)")]
        public string[] Set { get; init; } = [];
        [CommandOption("--seeds <N>")][Description("Number of training seeds (default 3)")]
        public int? Seeds { get; init; }
        [CommandOption("--quick")][Description("Small budgets (CI)")]
        public bool Quick { get; init; }
        [CommandOption("--model <DIR>")][Description("Start from a Hugging Face Qwen3 folder instead of the small embedded model")]
        public string? Model { get; init; }
        [CommandOption("--dataset <SPEC>")][Description("grammar (default), arithmetic, cola:FILE, gsm8k:FILE")]
        public string? Dataset { get; init; }
        [CommandOption("--device <DEVICE>")][Description("cpu, cuda or auto")]
        public string? Device { get; init; }
        [CommandOption("--runs <DIR>")][Description("Folder of run folders")][DefaultValue("runs")]
        public string Runs { get; init; } = "runs";
        [CommandOption("--resume <RUN_DIR>")][Description("Continue a killed run")]
        public string? Resume { get; init; }
    }

    public override int Execute(CommandContext context, Settings s)
    {
        var pipelines = ExperimentConfig.Resolve(s.Experiment);
        ExperimentConfig cfg;
        string runDir;
        if (s.Resume is not null)
        {
            if (!File.Exists(Path.Combine(s.Resume, "config.json"))) throw new WorkbookException($"{s.Resume}: not a run folder (no config.json)");
            cfg = ExperimentConfig.Load(Path.Combine(s.Resume, "config.json"));
            runDir = s.Resume;
        }
        else
        {
            var overrides = s.Set.ToList();
            if (s.Seeds is { } n) overrides.Add($"seeds={n}");
            if (s.Model is not null) overrides.Add($"model=\"{s.Model}\"");
            if (s.Dataset is not null) overrides.Add($"dataset=\"{s.Dataset}\"");
            if (s.Device is not null) overrides.Add($"device=\"{s.Device}\"");
            cfg = ExperimentConfig.Load(s.Config, overrides);
            if (s.Quick) cfg = cfg.Quick();
            cfg.Validate();
            runDir = ExperimentRunner.NewRunDir(s.Runs, (s.Quick ? "quick-" : "") + s.Experiment);
        }
        var sw = Stopwatch.StartNew();
        // the runner validates the config and loads the data before anything is written: bad input leaves no run folder
        var runner = new ExperimentRunner(cfg, runDir, Path.GetDirectoryName(Path.GetFullPath(runDir))!, m => AnsiConsole.MarkupLineInterpolated($"[grey]{m}[/]"));
        AnsiConsole.MarkupLineInterpolated($"[bold]run folder:[/] {runDir}");
        runner.OnMetrics += (stage, step, m) =>
        {
            if (m.ContainsKey("eval_sft_loss"))
                AnsiConsole.MarkupLineInterpolated($"  {stage} step {step}: {MetricsLog.Format(m, "eval_sft_loss", runner.StrictKey, runner.LenientKey)}  [grey]({sw.Elapsed:mm\\:ss})[/]");
        };
        var (summary, report) = runner.RunAndReport(pipelines);
        AnsiConsole.WriteLine();
        foreach (var (name, st) in summary["statements"]!.AsObject()) AnsiConsole.MarkupLineInterpolated($"[bold]{name}[/]: {st!.GetValue<string>()}");
        AnsiConsole.MarkupLineInterpolated($"[bold]summary:[/] {Path.Combine(runDir, "summary.json")}");
        AnsiConsole.MarkupLineInterpolated($"[bold]report:[/] {report}  [grey](total {sw.Elapsed:mm\\:ss})[/]");
        return 0;
    }
}

public sealed class ReportCommand : Command<ReportCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<RUN_DIR>")] public string RunDir { get; init; } = "";
    }

    public override int Execute(CommandContext context, Settings s)
    {
        AnsiConsole.MarkupLineInterpolated($"report: {Report.Write(s.RunDir)}");
        return 0;
    }
}
