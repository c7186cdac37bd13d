// The `workbook` command. Choices:
//   1. Output is plain (no colours, no cursor control, no wrapping) unless stdout is a terminal and NO_COLOR is unset.
//   2. Errors go to stderr as one line "error: ..." and exit 2 when the input is at fault (a WorkbookException, a bad
//      option, a file the OS refuses); an unexpected exception prints its stack trace and exits 1.
//   3. Typed options (integers, numbers) are checked before parsing so the message names the option and the value.
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook;
using Workbook.Cli;

NativeSetup.Ensure(); // before any command touches TorchSharp (oneMKL vendor fix, malloc tuning)
Terminal.Configure();
if (NativeSetup.Problems() is [var setupProblem, ..])
    return Terminal.Error(setupProblem); // a misspelt variable would otherwise quietly take the default
var verbs = new (string Name, Type Command, string Description)[]
{
    (
        "run",
        typeof(RunCommand),
        "Run the coupling experiments (the main job): sft-then-rl, rl-then-sft, interleaved, joint, a control or all."
    ),
    (
        "sweep",
        typeof(SweepCommand),
        "Predicted against measured SFT-loss rise over a grid of beta and loose_format_fraction (kl_mode = reward)."
    ),
    ("train", typeof(TrainCommand), "Train with one trainer: sft or grpo (options file with TRL names; resumable)."),
    (
        "notebooks",
        typeof(NotebooksCommand),
        "Run the notebooks headless (dotnet repl) and render them to reports/notebooks/*.html."
    ),
    (
        "report",
        typeof(CouplingReportCommand),
        "Re-render report.html of a run folder, or --from-trl DIR: the coupling report of TRL runs."
    ),
    (
        "export-recipe",
        typeof(ExportRecipeCommand),
        "Write the experiment as a runnable TRL script (SFTConfig/GRPOConfig, same prompt and verifiers)."
    ),
    (
        "score",
        typeof(ScoreCommand),
        "Per-position argmax, logsumexp, top-K and next-token log-probability of a sequence."
    ),
    ("generate", typeof(GenerateCommand), "Generate from a prompt (greedy or sampled) with the KV cache."),
    ("tokenize", typeof(TokenizeCommand), "Encode text to Qwen3 ids, decode ids, or tokenize a JSONL file."),
    ("verify", typeof(VerifyCommand), "Score JSONL completions against references with a rule-based verifier."),
    (
        "landscape",
        typeof(LandscapeCommand),
        "Landscape constants (smoothness, PL, T*, threshold, misalignment) on the small transformer."
    ),
    ("bench", typeof(BenchCommand), "Measure speed (JSON): SFT tokens/s and MFU, GRPO rollout/update, generation."),
    ("info", typeof(InfoCommand), "Print versions, device, the main job's model and the model presets."),
};
if (OptionCheck.Check(args, verbs.ToDictionary(v => v.Name, v => v.Command)) is { } problem)
    return Terminal.Error(problem);

var app = new CommandApp();
app.Configure(c =>
{
    c.SetApplicationName("workbook");
    c.UseStrictParsing();
    foreach (var (name, command, description) in verbs)
        typeof(Program)
            .GetMethod(nameof(Add), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
            .MakeGenericMethod(command)
            .Invoke(null, [c, name, description]);
    c.SetExceptionHandler((ex, _) => Terminal.Report(ex));
});
return app.Run(args);

partial class Program
{
    static void Add<T>(IConfigurator c, string name, string description)
        where T : class, ICommand => c.AddCommand<T>(name).WithDescription(description);
}
