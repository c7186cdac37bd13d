using Workbook.Text;

namespace Workbook.Data;

/// <summary>
/// One task row, as every trainer sees it: the prompt conversation (rendered with the chat template, generation prompt
/// added), the expert response used by SFT, and the reference the verifier checks against.
/// </summary>
public sealed record Example(IReadOnlyList<ChatMessage> Prompt, string Expert, string Reference, string Source = "")
{
    public string PromptText => Prompt[^1].Content;

    /// <summary>The expert response's form when the task mixes several (grammar: "strict" line or "loose"
    /// words).</summary>
    public string Form { get; init; } = "";

    /// <summary>Where the answer part of the expert response starts (characters; −1 = not split): the rest before it is
    /// the rationale. Evaluation splits the SFT loss by form and by span with these.</summary>
    public int AnswerStart { get; init; } = -1;
}

/// <summary>Rows that were skipped with --skip-bad, with the first few reasons.</summary>
public sealed record LoadReport(int Loaded, int Skipped, IReadOnlyList<string> FirstProblems);
