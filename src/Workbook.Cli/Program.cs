using Spectre.Console;
using Spectre.Console.Cli;
using Workbook;
using Workbook.Cli;

NativeSetup.Ensure();   // before any command touches TorchSharp (oneMKL vendor fix, malloc tuning)
var app = new CommandApp();
app.Configure(c =>
{
    c.SetApplicationName("workbook");
    c.UseStrictParsing();
    c.AddCommand<RunCommand>("run").WithDescription("Run the coupling experiments (the main job): sft-then-rl, rl-then-sft, interleaved, joint or all.");
    c.AddCommand<TrainCommand>("train").WithDescription("Train with one trainer: sft or grpo (options file with TRL names; resumable).");
    c.AddCommand<NotebooksCommand>("notebooks").WithDescription("Run the notebooks headless (dotnet repl) and render them to reports/notebooks/*.html.");
    c.AddCommand<ReportCommand>("report").WithDescription("Re-render report.html of a run folder.");
    c.AddCommand<ScoreCommand>("score").WithDescription("Per-position argmax, logsumexp, top-K and next-token log-probability of a sequence.");
    c.AddCommand<GenerateCommand>("generate").WithDescription("Generate from a prompt (greedy or sampled) with the KV cache.");
    c.AddCommand<TokenizeCommand>("tokenize").WithDescription("Encode text to Qwen3 ids, decode ids, or tokenize a JSONL file.");
    c.AddCommand<VerifyCommand>("verify").WithDescription("Score JSONL completions against references with a rule-based verifier.");
    c.AddCommand<LandscapeCommand>("landscape").WithDescription("Landscape constants (smoothness, PL, T*, threshold, misalignment) measured on the small transformer.");
    c.AddCommand<BenchCommand>("bench").WithDescription("Measure speed (JSON): SFT tokens/s and MFU, GRPO rollout/update, generation.");
    c.AddCommand<InfoCommand>("info").WithDescription("Print versions, device and the model presets.");
    c.SetExceptionHandler((ex, _) =>
    {
        if (ex is WorkbookException or CommandAppException)
            AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {ex.Message}");
        else
            AnsiConsole.WriteException(ex, ExceptionFormats.ShortenPaths);
        return ex is WorkbookException or CommandAppException ? 2 : 1;
    });
});
return app.Run(args);
