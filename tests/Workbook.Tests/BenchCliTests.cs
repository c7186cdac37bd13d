// `workbook bench` refuses bad input with exit code 2 and a message naming the option, before measuring anything.
using System.Diagnostics;

namespace Workbook.Tests;

public class BenchCliTests
{
    static (int code, string output) Run(params string[] args) => RunWith(null, args);

    static (int code, string output) RunWith(string? mklFix, params string[] args)
    {
        var cli = Path.Combine(AppContext.BaseDirectory, "workbook.dll");
        var psi = new ProcessStartInfo("dotnet", [cli, .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.Environment["WORKBOOK_MKL_VENDOR_FIX"] = mklFix;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(60_000));
        return (p.ExitCode, output + err.Result);
    }

    [Theory]
    [InlineData("--vocab", "0", "--vocab 0")]
    [InlineData("--vocab", "200000", "does not fit")]
    [InlineData("--batch", "0", "--batch 0")]
    [InlineData("--gen-batch", "-1", "--gen-batch -1")]
    [InlineData("--dtype", "f16", "f16 is refused")]
    public void BadInputGetsAClearErrorAndExitCode2(string option, string value, string message)
    {
        var (code, output) = Run("bench", "train", option, value);
        Assert.Equal(2, code);
        Assert.Contains(message, output.Replace("\n", " "));
    }

    [Fact]
    public void Every_bench_option_has_a_help_line()
    {
        var missing = typeof(Workbook.Cli.BenchCommand.Settings)
            .GetProperties()
            .Where(p =>
                p.GetCustomAttributes(typeof(Spectre.Console.Cli.CommandOptionAttribute), true).Length > 0
                && p.GetCustomAttributes(typeof(System.ComponentModel.DescriptionAttribute), true).Length == 0
            )
            .Select(p => p.Name);
        Assert.Empty(missing);
    }
}
