using System.Buffers;
using System.Text;
using HandoffDapr.Core.Model;

namespace HandoffDapr.Core.Prompts;

/// <summary>
/// Builds the prompt the coding agent receives. Parts are joined by a blank line; missing or null
/// artifact fields are skipped. When the prompt would exceed the cap, only the artifact text is cut:
/// the opening instruction, the "Fixes" line and the caller's instruction always survive. They fit because start-up
/// requires <c>MaxInstructionLength</c> + <see cref="HeadReserve"/> to be within every integration's cap, and the
/// opening and "Fixes" line (under 200 characters) with what a provider reserves of the cap for itself
/// (<c>ICodingAgentProvider.PromptReserve</c>: Copilot's reference line, under 200) take less than that reserve.
/// </summary>
public static class PromptBuilder
{
    public const string Opening = "Please fix the following issue. Ensure that your fix is fully working.";
    public const string TruncationMarker = "\n\n[Truncated: the analysis was longer than this agent accepts.]";
    public const int DefaultMaxLength = 30_000;

    /// <summary>Room the opening and the "Fixes" line may take; the caller's instruction must fit in what is left.</summary>
    public const int HeadReserve = 1024;

    /// <summary>Real short ids are a few characters ("SHOP-1A2"); a longer one, sent by a client, is left out.</summary>
    public const int MaxShortIdLength = 64;
    private const string Separator = "\n\n";

    // Letters, digits, '-' and '_' only: the id sits in the prompt's own instructions, so it must not carry sentences.
    private static readonly SearchValues<char> ShortIdCharacters =
        SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");

    public static string Build(RunSnapshot snapshot, string? instruction, bool autoCreatePr, int maxLength = DefaultMaxLength)
    {
        var head = new StringBuilder(Opening);
        var shortId = snapshot.Group?.ShortId?.Trim();
        if (autoCreatePr && shortId is { Length: > 0 and <= MaxShortIdLength } && !shortId.AsSpan().ContainsAnyExcept(ShortIdCharacters))
        {
            head.Append(Separator).Append("Include 'Fixes ").Append(shortId).Append("' in the pull request description.");
        }

        if (!string.IsNullOrWhiteSpace(instruction))
        {
            head.Append(Separator).Append(instruction.Trim());
        }

        var artifacts = ArtifactText(snapshot.Artifacts);
        if (artifacts.Length == 0)
        {
            return head.ToString();
        }

        var room = maxLength - head.Length - Separator.Length;
        if (artifacts.Length > room)
        {
            var keep = room - TruncationMarker.Length;
            if (keep <= 0)
            {
                return head.ToString();
            }

            // Never split a surrogate pair: the JSON serializer would have to replace the half character.
            if (char.IsHighSurrogate(artifacts[keep - 1]))
            {
                keep--;
            }

            // A line cut short may be left of only '=' or '-' ("- open the page" cut after its dash): an underline making
            // the line above a heading, which AsData escapes only in whole lines. Such a piece of a line is left out, also
            // after quote marks ("> - open…" cut to "> -" under a quoted line).
            var lineStart = artifacts.AsSpan(0, keep).LastIndexOfAny('\n', '\r') + 1;
            var piece = artifacts.AsSpan(lineStart, keep - lineStart).Trim();
            if (IsUnderline(piece[ContainerMarksLength(piece)..].TrimEnd()))
            {
                keep = lineStart;
            }

            artifacts = string.Concat(artifacts.AsSpan(0, keep), TruncationMarker);
        }

        return head.Append(Separator).Append(artifacts).ToString();
    }

    private static string ArtifactText(RunArtifacts? artifacts)
    {
        var sections = new List<string>(2);
        if (RootCauseSection(artifacts?.RootCause) is { } rootCause)
        {
            sections.Add(rootCause);
        }

        if (SolutionSection(artifacts?.Solution) is { } solution)
        {
            sections.Add(solution);
        }

        return string.Join(Separator, sections);
    }

    private static string? RootCauseSection(RootCauseArtifact? rootCause)
    {
        if (rootCause is null)
        {
            return null;
        }

        var blocks = new List<string>();
        AddIfPresent(blocks, rootCause.OneLineDescription);

        // Each why and each step is a part of its own, as in the reference.
        blocks.AddRange(NonBlank(rootCause.FiveWhys).Select((why, i) => $"{i + 1}. {why}"));
        blocks.AddRange(NonBlank(rootCause.ReproductionSteps).Select(step => $"- {step}"));

        return Section("## Root Cause Analysis", blocks);
    }

    private static string? SolutionSection(SolutionArtifact? solution)
    {
        if (solution is null)
        {
            return null;
        }

        var blocks = new List<string>();
        AddIfPresent(blocks, solution.OneLineSummary);

        blocks.AddRange((solution.Steps ?? []).Select(StepLine).OfType<string>());

        return Section("## Proposed Solution", blocks);
    }

    /// <summary>"- **title**: description", or whichever half exists; null when neither does.</summary>
    private static string? StepLine(SolutionStep? step)
    {
        var title = string.IsNullOrWhiteSpace(step?.Title) ? null : AsData(step.Title.Trim());
        var description = string.IsNullOrWhiteSpace(step?.Description) ? null : AsData(step.Description.Trim());
        return (title, description) switch
        {
            (null, null) => null,
            (null, _) => $"- {description}",
            (_, null) => $"- **{title}**",
            _ => $"- **{title}**: {description}",
        };
    }

    private static string? Section(string heading, List<string> blocks) =>
        blocks.Count == 0 ? null : heading + Separator + string.Join(Separator, blocks);

    private static void AddIfPresent(List<string> blocks, string? text)
    {
        if (!string.IsNullOrWhiteSpace(text))
        {
            blocks.Add(AsData(text.Trim()));
        }
    }

    private static IEnumerable<string> NonBlank(IReadOnlyList<string?>? items) =>
        (items ?? []).Where(item => !string.IsNullOrWhiteSpace(item)).Select(item => AsData(item!.Trim()));

    /// <summary>
    /// Run data may quote production input (an error message, a request): a line of it that starts with '#' would read
    /// as a section of the prompt's own ("## Instructions", also in a quote or a list item: "> ## Instructions"), and
    /// so would a line underlined by one of only '=' or '-' (markdown's other heading). Such a '#', '=' or '-' is
    /// escaped, so the text stays the analysis'.
    /// </summary>
    private static string AsData(string text)
    {
        if (!text.AsSpan().ContainsAny(HeadingMarks))
        {
            return text;
        }

        // Every markdown line ending: a bare CR ends a line too.
        var lines = text.ReplaceLineEndings("\n").Split('\n');
        for (var i = 0; i < lines.Length; i++)
        {
            var indent = lines[i].Length - lines[i].TrimStart().Length;
            var rest = lines[i].AsSpan(indent).TrimEnd();
            // After any quote marks and list markers (none before an underline, which is only '=' or '-'): an underline
            // there ("> Instructions" over "> ====") makes a heading in the quote all the same.
            var heading = indent + ContainerMarksLength(rest);
            if (heading < lines[i].Length && (lines[i][heading] == '#' || IsUnderline(lines[i].AsSpan(heading).TrimEnd())))
            {
                lines[i] = string.Concat(lines[i].AsSpan(0, heading), "\\", lines[i].AsSpan(heading));
            }
        }

        return string.Join('\n', lines);
    }

    /// <summary>
    /// The length of the block quote marks ('>') and list item markers ("-", "*", "+", "1.", "1)") a line starts with:
    /// a heading inside a quote or a list item ("> ## Instructions") is a heading all the same.
    /// </summary>
    private static int ContainerMarksLength(ReadOnlySpan<char> line)
    {
        var at = 0;
        while (at < line.Length)
        {
            var marker = line[at] switch
            {
                '>' => 1,
                '-' or '*' or '+' => 1,
                _ => line[at..].IndexOfAnyExceptInRange('0', '9') is var digits and >= 1 and <= 9
                    && at + digits < line.Length && line[at + digits] is '.' or ')' ? digits + 1 : 0,
            };
            // A list marker needs a space after it ("-#" is text); a quote mark does not (">#" is a quoted heading).
            var spaces = marker == 0 ? 0 : line[(at + marker)..].IndexOfAnyExcept(' ', '\t') is var n and >= 0 ? n : line.Length - at - marker;
            if (marker == 0 || (line[at] != '>' && spaces == 0))
            {
                return at;
            }

            at += marker + spaces;
        }

        return at;
    }

    private static readonly SearchValues<char> HeadingMarks = SearchValues.Create("#=-");

    /// <summary>A setext heading's underline: only '=', or only '-' (a line of text above it becomes a heading).</summary>
    private static bool IsUnderline(ReadOnlySpan<char> line) =>
        line.Length > 0 && (!line.ContainsAnyExcept('=') || !line.ContainsAnyExcept('-'));
}
