// Text <-> model ids for training: renders conversations with the Qwen3 chat template (thinking off: the template's
// empty think block is pre-filled, as in the paper's label-answer setting), maps Qwen3 ids to the model's vocabulary
// (compact task vocabulary for small models, identity for full ones) and decodes completions for the verifiers.
using Workbook.Data;
using Workbook.Text;

namespace Workbook.Training;

public sealed record SftSequence(int[] Ids, bool[] LossMask);

public sealed class Codec(Qwen3Tokenizer tokenizer, TaskVocabulary vocab)
{
    public Qwen3Tokenizer Tokenizer { get; } = tokenizer;
    public TaskVocabulary Vocab { get; } = vocab;

    /// <summary>The chat template's enable_thinking for generation prompts (task.enable_thinking; false = the empty
    /// think block is pre-filled, the label-answer setting).</summary>
    public bool EnableThinking { get; init; }
    public int EosId => Vocab.ToCompact(Tokenizer.ImEndId);
    public int PadId => Vocab.ToCompact(Tokenizer.EndOfTextId);

    /// <summary>The prompt with the generation prompt appended: what the policy continues.</summary>
    public int[] Prompt(Example e) =>
        Vocab.ToCompact(ChatTemplate.Tokenize(Tokenizer, e.Prompt, true, EnableThinking).Ids);

    /// <summary>Prompt + expert response; the loss mask marks the response and its &lt;|im_end|&gt;.</summary>
    public SftSequence Sft(Example e, bool completionOnly = true)
    {
        var t = ChatTemplate.Tokenize(Tokenizer, [.. e.Prompt, ChatMessage.Assistant(e.Expert)], false, false);
        var mask = completionOnly ? t.AssistantMask : Enumerable.Repeat(true, t.Ids.Length).ToArray();
        return new SftSequence(Vocab.ToCompact(t.Ids), mask);
    }

    /// <summary>Which loss-masked tokens of <see cref="Sft"/> belong to the answer span (from e.AnswerStart on, with
    /// &lt;|im_end|&gt;): those from the first token where the rendering differs from the rationale-only
    /// rendering.</summary>
    public bool[] AnswerMask(Example e, SftSequence seq)
    {
        var mask = new bool[seq.Ids.Length];
        if (e.AnswerStart < 0)
            return mask;
        var head = ChatTemplate
            .Tokenize(
                Tokenizer,
                [.. e.Prompt, ChatMessage.Assistant(e.Expert[..e.AnswerStart].TrimEnd())],
                false,
                false
            )
            .Ids;
        var ids = Vocab.ToQwen(seq.Ids).ToArray();
        int common = 0;
        while (common < ids.Length && common < head.Length && ids[common] == head[common])
            common++;
        for (int t = common; t < mask.Length; t++)
            mask[t] = seq.LossMask[t];
        return mask;
    }

    /// <summary>Completion text for the verifier: the tokens before the first EOS.</summary>
    public string Decode(IEnumerable<int> modelIds) =>
        Tokenizer.Decode(Vocab.ToQwen(modelIds.TakeWhile(i => i != EosId)));
}
