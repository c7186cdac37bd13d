// `workbook bench` refuses bad input with exit code 2 and a message naming the option, before measuring anything.

namespace Workbook.Tests;

public class BenchCliTests
{
    // with the default oneMKL path, whatever the test process's environment says
    static (int code, string output) Run(params string[] args)
    {
        var (code, o, err) = CliProcess.Run(
            args,
            new Dictionary<string, string?> { ["WORKBOOK_MKL_VENDOR_FIX"] = null }
        );
        return (code, o + err);
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
