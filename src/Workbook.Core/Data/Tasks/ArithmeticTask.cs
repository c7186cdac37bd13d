// The embedded GSM8K-like task: short multi-step word problems over small integers, with expert step-by-step solutions
// ending in "#### N" (deterministic by seed). Reward: GSM8K strict (last "#### N" equals the answer). Some expert
// solutions (LooseFormatFraction) end with "The answer is N." instead, the natural wording the strict reward does not
// accept.
using Workbook.Text;
using Workbook.Verifiers;

namespace Workbook.Data;

public static class ArithmeticTask
{
    static readonly string[] Names = ["Ana", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana"];
    static readonly string[] Things = ["apples", "books", "coins", "cards", "eggs", "pens", "shells", "stamps"];

    public static TaskData Create(int seed, TaskOptions o)
    {
        o.Validate();
        var rng = new Random(seed * 104729 + 5);
        var all = DistinctRows.Draw(
            "arithmetic",
            o.TrainSize + o.EvalSize,
            _ =>
            {
                var (question, steps, answer) = Problem(rng);
                return (
                    question,
                    () =>
                    {
                        var prompt = new List<ChatMessage> { ChatMessage.User(question) };
                        bool loose = rng.NextDouble() < o.LooseFormatFraction;
                        var end = loose ? $"The answer is {answer}." : $"#### {answer}";
                        var expert = o.Rationales ? $"{steps}\n{end}" : end;
                        return (
                            new Example(prompt, expert, answer.ToString(), "arithmetic"),
                            new Example(
                                prompt,
                                rng.Next(2) == 0 ? $"#### {answer}" : answer.ToString(),
                                answer.ToString(),
                                "arithmetic"
                            )
                        );
                    }
                );
            }
        );
        var train = all.Take(o.TrainSize).ToList();
        var eval = all.Skip(o.TrainSize).Take(o.EvalSize).ToList();
        return new TaskData(
            "arithmetic",
            train.Select(t => t.Expert).ToList(),
            eval.Select(t => t.Expert).ToList(),
            train.Select(t => t.Terse).ToList(),
            new Gsm8kVerifier(flexible: false),
            [new Gsm8kVerifier(flexible: false), new Gsm8kVerifier(flexible: true)],
            $"Embedded arithmetic word problems (2-3 steps, small integers). Expert solutions show each "
                + $"step; {o.LooseFormatFraction:P0} end with "
                + "'The answer is N.' and the rest with '#### N'. RL reward: GSM8K strict ('#### N' correct)."
        )
        {
            HeldOutBase = eval.Select(t => t.Terse).ToList(),
        };
    }

    static (string question, string steps, int answer) Problem(Random r)
    {
        var name = Names[r.Next(Names.Length)];
        var thing = Things[r.Next(Things.Length)];
        int a = r.Next(2, 10),
            b = r.Next(1, 10);
        int x = a + b;
        var q = $"{name} has {a} {thing}. {name} gets {b} more.";
        var steps = $"{a} + {b} = {x}.";
        switch (r.Next(3))
        {
            case 0:
                int c = r.Next(1, x);
                q += $" Then {name} gives away {c}.";
                steps += $" {x} - {c} = {x - c}.";
                x -= c;
                break;
            case 1:
                q += $" Then {name} doubles them.";
                steps += $" {x} * 2 = {x * 2}.";
                x *= 2;
                break;
        }
        q += $" How many {thing} does {name} have now?";
        return (q, steps, x);
    }
}
