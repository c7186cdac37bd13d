using System.Globalization;
using System.Reflection;
using Spectre.Console.Cli;

namespace Workbook.Cli;

/// <summary>Checks the values of typed options (integers, numbers) before the parser sees them, so a bad value gets
/// "--seeds: expected an integer, got 'x'" instead of the parser's "Failed to convert 'x' to Nullable`1"; and names
/// the new spelling of a renamed option.</summary>
public static class OptionCheck
{
    /// <summary>Options renamed so that one name means one thing in every verb (--out: the output file; --runs: the
    /// folder of run folders): the old spelling is an error that gives the new one.</summary>
    public static readonly IReadOnlyDictionary<(string Verb, string Option), string> Renamed = new Dictionary<
        (string, string),
        string
    >
    {
        [("train", "--out")] = "train writes a run folder: use --run-dir RUN_DIR (--out names an output file)",
        [("bench", "--runs")] =
            "use --repeats N for the timed generation runs (--runs DIR names the folder of run folders)",
    };

    public static string? Check(string[] args, IReadOnlyDictionary<string, Type> commands)
    {
        if (args.Length == 0 || !commands.TryGetValue(args[0], out var command))
            return null;
        foreach (var arg in args.Skip(1))
            if (Renamed.TryGetValue((args[0], arg.Split('=')[0]), out var hint))
                return $"{arg.Split('=')[0]}: {hint}";
        var settings = SettingsType(command);
        if (settings is null)
            return null;
        var typed = new Dictionary<string, Type>();
        foreach (var p in settings.GetProperties())
            if (p.GetCustomAttribute<CommandOptionAttribute>() is { } a)
            {
                var t = Nullable.GetUnderlyingType(p.PropertyType) ?? p.PropertyType;
                foreach (var n in a.LongNames)
                    typed[$"--{n}"] = t;
            }
        for (int i = 1; i < args.Length; i++)
        {
            var arg = args[i];
            if (!arg.StartsWith("--"))
                continue;
            var eq = arg.IndexOf('=');
            var name = eq > 0 ? arg[..eq] : arg;
            if (!typed.TryGetValue(name, out var t))
                continue;
            if (t == typeof(bool) || t == typeof(string) || t.IsArray)
                continue;
            string? value =
                eq > 0 ? arg[(eq + 1)..]
                : i + 1 < args.Length ? args[++i]
                : null;
            if (value is null)
                return $"{name}: expected a value";
            if (Problem(value, t) is { } why)
                return $"{name}: {why}, got '{value}'";
        }
        return null;
    }

    static string? Problem(string v, Type t)
    {
        const NumberStyles I = NumberStyles.Integer;
        var c = CultureInfo.InvariantCulture;
        if (t == typeof(int))
            return int.TryParse(v, I, c, out _) ? null
                : long.TryParse(v, I, c, out _) ? $"expected an integer in [{int.MinValue}, {int.MaxValue}]"
                : "expected an integer";
        if (t == typeof(long))
            return long.TryParse(v, I, c, out _) ? null : "expected an integer";
        if (t == typeof(double) || t == typeof(float))
            return !double.TryParse(v, NumberStyles.Float, c, out var d) ? "expected a number"
                : !double.IsFinite(d) || (t == typeof(float) && !float.IsFinite((float)d)) ? "expected a finite number"
                : null;
        return null;
    }

    static Type? SettingsType(Type command)
    {
        for (var t = command; t is not null; t = t.BaseType)
            if (t.IsGenericType && t.GetGenericTypeDefinition() == typeof(Command<>))
                return t.GetGenericArguments()[0];
        return null;
    }
}
