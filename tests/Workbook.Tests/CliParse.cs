using Spectre.Console.Cli;
using Workbook.Cli;

namespace Workbook.Tests;

/// <summary>Parses a command line in-process through Spectre's CommandApp with the CLI's verbs: an interceptor captures
/// the bound and validated settings instead of running the command. A verb's refusal is the parser's
/// CommandRuntimeException, which the CLI prints as "error: ..." with exit code 2.</summary>
static class CliParse
{
    sealed class Parsed(CommandSettings settings) : Exception
    {
        public CommandSettings Settings { get; } = settings;
    }

    sealed class Capture : ICommandInterceptor
    {
        public void Intercept(CommandContext context, CommandSettings settings) => throw new Parsed(settings);

        public void InterceptResult(CommandContext context, CommandSettings settings, ref int result) { }
    }

    public static CommandSettings Settings(params string[] args)
    {
        var app = new CommandApp();
        app.Configure(c =>
        {
            c.PropagateExceptions();
            c.UseStrictParsing();
            c.SetInterceptor(new Capture());
            c.AddCommand<TrainCommand>("train");
            c.AddCommand<RunCommand>("run");
            c.AddCommand<SweepCommand>("sweep");
            c.AddCommand<BenchCommand>("bench");
            c.AddCommand<GenerateCommand>("generate");
            c.AddCommand<ScoreCommand>("score");
        });
        try
        {
            app.Run(args);
        }
        catch (Exception e)
        {
            for (Exception? x = e; x is not null; x = x.InnerException)
                if (x is Parsed p)
                    return p.Settings;
            throw;
        }
        throw new InvalidOperationException("the command ran instead of being intercepted");
    }
}
