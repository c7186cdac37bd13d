// When the CLI turns on the oneMKL vendor fix by itself (README, Platform notes). `run` and `sweep` on the small model
// run every seed with one torch thread (one MKL thread), the shape in which the fix measured faster; it was slower only
// with two MKL threads per process on an oversubscribed machine, so `--model` runs and every other command keep the
// default. An explicit WORKBOOK_MKL_VENDOR_FIX (1 or 0) always wins. This class must not touch the core assembly:
// the core's module initializer reads the variable when the core is first used.
namespace Workbook.Cli;

public static class MklPolicy
{
    public const string Variable = "WORKBOOK_MKL_VENDOR_FIX";

    public static void Apply(string[] args)
    {
        if (Environment.GetEnvironmentVariable(Variable) is { Length: > 0 })
            return;
        if (SingleThreadedSmallModel(args))
            Environment.SetEnvironmentVariable(Variable, "1");
    }

    /// <summary>`run` or `sweep` on the small model: no --model or --set model=..., and no --config or --resume
    /// whose config names one (a file that cannot be read is left to the command to report; the fix then stays
    /// off).</summary>
    public static bool SingleThreadedSmallModel(string[] args)
    {
        if (args.Length == 0 || args[0] is not ("run" or "sweep"))
            return false;
        for (int i = 1; i < args.Length; i++)
        {
            var (name, value) = args[i].Split('=', 2) is [var n, var v] ? (n, v) : (args[i], null);
            value ??= i + 1 < args.Length ? args[i + 1] : null;
            if (name == "--model" || (name == "--set" && value?.TrimStart().StartsWith("model=") == true))
                return false;
            if (
                name is "--config" or "--resume"
                && !NamesNoModel(name == "--resume" ? Path.Combine(value ?? "", "config.json") : value)
            )
                return false;
        }
        return true;
    }

    static bool NamesNoModel(string? file)
    {
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(file ?? ""));
            return !doc.RootElement.TryGetProperty("model", out var m)
                || m.ValueKind == System.Text.Json.JsonValueKind.Null;
        }
        catch (Exception e)
            when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException or ArgumentException
            )
        {
            return false;
        }
    }
}
