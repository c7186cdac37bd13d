using Workbook.Data;
using Workbook.Verifiers;

namespace Workbook.Tests;

public class VerifierTests
{
    static string Gsm8kPath => Path.Combine(TestData.Shared, "datasets", "gsm8k", "train.jsonl");

    [Fact]
    public void Every_gsm8k_gold_solution_scores_1_and_perturbed_answers_score_0()
    {
        var (rows, report) = Datasets.LoadGsm8k(Gsm8kPath);
        Assert.Equal(7473, rows.Count);
        Assert.Equal(0, report.Skipped);
        var strict = new Gsm8kVerifier(false);
        var flex = new Gsm8kVerifier(true);
        var math = new MathVerifier();
        foreach (var r in rows)
        {
            Assert.Equal(1.0, strict.Score(r.Question, r.Answer, r.FinalAnswer).Reward);
            Assert.Equal(1.0, strict.Score(r.Question, r.Answer, r.Answer).Reward); // full solution as reference
            Assert.Equal(1.0, flex.Score(r.Question, r.Answer, r.FinalAnswer).Reward);
            Assert.Equal(1.0, math.Score(r.Question, r.Answer, r.FinalAnswer).Reward);
            var gold = double.Parse(r.FinalAnswer.Replace(",", ""), System.Globalization.CultureInfo.InvariantCulture);
            var wrong =
                r.Answer[..r.Answer.LastIndexOf("####")]
                + "#### "
                + (gold + 1).ToString(System.Globalization.CultureInfo.InvariantCulture);
            Assert.True(
                strict.Score(r.Question, wrong, r.FinalAnswer).Reward == 0.0,
                $"{r.FinalAnswer} vs {wrong[^40..]}"
            );
            Assert.Equal(0.0, flex.Score(r.Question, wrong, r.FinalAnswer).Reward);
        }
    }

    [Theory]
    // completion, reference, strict, flexible
    [InlineData("so the total is\n#### 1,000", "1000", 1, 1)]
    [InlineData("#### 1000", "1,000", 1, 1)]
    [InlineData("#### $5.00", "5", 0, 1)] // strict regex stops at '$' like verl: no number after ####
    [InlineData("#### 5.00", "5", 1, 1)]
    [InlineData("#### -3", "-3", 1, 1)]
    [InlineData("#### 3", "-3", 0, 0)]
    [InlineData("#### 7\nbut actually #### 8", "8", 1, 1)] // last match
    [InlineData("The answer is 12.", "12", 0, 1)] // no #### : strict fails, flexible takes the last number
    [InlineData("12 apples and then 3", "12", 0, 0)]
    [InlineData("I think the answer is", "4", 0, 0)] // truncated
    [InlineData("####", "4", 0, 0)]
    public void Gsm8k_tricky_cases(string completion, string reference, double strict, double flexible)
    {
        Assert.Equal(strict, new Gsm8kVerifier(false).Score("", completion, reference).Reward);
        Assert.Equal(flexible, new Gsm8kVerifier(true).Score("", completion, reference).Reward);
    }

    [Theory]
    [InlineData("so \\boxed{\\frac{1}{2}}", "0.5", 1)]
    [InlineData("\\boxed{\\dfrac12}", "1/2", 1)]
    [InlineData("\\boxed{0.5}", "\\frac{1}{2}", 1)]
    [InlineData("\\boxed{\\frac{1}{3}}", "0.5", 0)]
    [InlineData("first \\boxed{2} then \\boxed{3}", "3", 1)]
    [InlineData("\\boxed{\\text{5 apples}}", "5apples", 1)]
    [InlineData("\\boxed{50\\%}", "50", 1)]
    [InlineData("\\boxed{90^\\circ}", "90", 1)]
    [InlineData("\\boxed{x=4}", "4", 1)]
    [InlineData("\\boxed{\\left(1,2\\right)}", "(1,2)", 1)]
    [InlineData("\\boxed{\\frac{1}{2}", "0.5", 0)] // unclosed box (truncated output): falls back to last number "2"
    [InlineData("The final answer is $1,234$.", "1234", 1)]
    [InlineData("\\boxed{.5}", "0.5", 1)]
    [InlineData("\\boxed{-\\frac{3}{4}}", "-0.75", 1)]
    public void Math_tricky_cases(string completion, string reference, double expected)
    {
        Assert.Equal(expected, new MathVerifier().Score("", completion, reference).Reward);
    }

    [Fact]
    public void Unparseable_references_are_reported_not_scored()
    {
        var r = new Gsm8kVerifier(false).Score("", "#### 4", "four");
        Assert.Null(r.Reward);
        Assert.Contains("unparseable", r.Note);
        Assert.Null(new LabelVerifier(true).Score("", "Answer: acceptable", "maybe").Reward);
        Assert.Null(new MathVerifier().Score("", "\\boxed{4}", "  ").Reward);
    }

    [Theory]
    // completion, reference, strict, lenient, format_ok
    [InlineData("The verb agrees.\nAnswer: acceptable", "acceptable", 1, 1, true)]
    [InlineData("Answer: acceptable", "1", 1, 1, true)]
    [InlineData("Answer: unacceptable", "0", 1, 1, true)]
    [InlineData("Answer: unacceptable", "1", 0, 0, true)]
    [InlineData("So it is acceptable.", "acceptable", 0, 1, false)] // right label, loose format
    [InlineData("answer: acceptable", "acceptable", 0, 1, false)] // case matters for the strict line
    [InlineData("Answer: acceptable.", "acceptable", 0, 1, false)] // trailing period breaks the strict line
    // last label wins (lenient)
    [InlineData("Answer: acceptable\nActually it is unacceptable.", "unacceptable", 0, 1, false)]
    [InlineData("Answer: acceptable\n", "acceptable", 1, 1, true)] // trailing newline is fine
    [InlineData("It is unacceptable", "acceptable", 0, 0, false)] // 'unacceptable' is not 'acceptable'
    [InlineData("Answer: accept", "acceptable", 0, 0, false)] // truncated
    [InlineData("", "acceptable", 0, 0, false)]
    public void Label_tricky_cases(string completion, string reference, double strict, double lenient, bool formatOk)
    {
        var s = new LabelVerifier(true).Score("", completion, reference);
        Assert.Equal(strict, s.Reward);
        Assert.Equal(formatOk, s.FormatOk);
        Assert.Equal(lenient, new LabelVerifier(false).Score("", completion, reference).Reward);
    }

    [Theory]
    [InlineData("<think>\nwhy\n</think>\n\nAnswer: acceptable", 1)]
    [InlineData("<think>\nwhy\n</think>", 0)] // nothing after the block
    [InlineData("<think>\nwhy never closed", 0)]
    [InlineData("Answer: acceptable", 0)]
    [InlineData("<think>a</think><think>b</think> x", 0)]
    public void Think_format(string completion, double expected) =>
        Assert.Equal(expected, new ThinkFormatVerifier().Score("", completion, "").Reward);

    [Fact]
    public void Weighted_rewards_combine()
    {
        var w = new WeightedReward([(new LabelVerifier(true), 1.0), (new LabelVerifier(false), 0.5)]);
        Assert.Equal(0.5, w.Score("", "So it is acceptable.", "acceptable").Total);
        Assert.Equal(1.5, w.Score("", "Answer: acceptable", "acceptable").Total);
        Assert.Throws<WorkbookException>(() => VerifierRegistry.Create("nope"));
    }
}
