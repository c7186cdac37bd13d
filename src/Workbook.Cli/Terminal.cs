// How the CLI talks to its user: plain unwrapped lines when stdout is redirected or NO_COLOR is set (no colours, no
// cursor control, no progress bars), colours and live progress only on a terminal. Errors go to stderr.
using Spectre.Console;
using Spectre.Console.Cli;

namespace Workbook.Cli;

public static class Terminal
{
    /// <summary>True when stdout is a terminal and NO_COLOR is unset: colours and live progress are allowed.</summary>
    public static bool Interactive { get; private set; }

    public static void Configure()
    {
        bool noColor = Environment.GetEnvironmentVariable("NO_COLOR") is { Length: > 0 };
        Interactive = !Console.IsOutputRedirected && !noColor;
        if (Interactive)
            return;
        var console = AnsiConsole.Create(
            new AnsiConsoleSettings
            {
                Ansi = AnsiSupport.No,
                ColorSystem = ColorSystemSupport.NoColors,
                Interactive = InteractionSupport.No,
                Out = new AnsiConsoleOutput(Console.Out),
            }
        );
        console.Profile.Width = 100_000; // never wrap: lines stay greppable
        AnsiConsole.Console = console;
    }

    /// <summary>Rows skipped with skip_bad: how many, and the first reasons (stderr).</summary>
    public static void ReportSkipped(string path, Workbook.Data.LoadReport r) =>
        Console.Error.WriteLine($"skipped {r.Skipped} bad row(s) of {path}: {string.Join("; ", r.FirstProblems)}");

    /// <summary>One line on stderr, exit code 2.</summary>
    public static int Error(string message)
    {
        Console.Error.WriteLine($"error: {message}");
        return 2;
    }

    /// <summary>The exception handler: the user's input at fault is one line and exit 2; a bug keeps its stack
    /// trace.</summary>
    public static int Report(Exception ex)
    {
        switch (ex)
        {
            case WorkbookException or CommandAppException:
                return Error(ex.Message);
            case UnauthorizedAccessException:
                return Error($"permission denied: {ex.Message}");
            case IOException io when io is not EndOfStreamException:
                return Error(ex.Message);
            case OutOfMemoryException:
                return Error("out of memory: lower the batch size, the sequence length or the model size");
            default:
                Console.Error.WriteLine(ex.ToString());
                return 1;
        }
    }
}
