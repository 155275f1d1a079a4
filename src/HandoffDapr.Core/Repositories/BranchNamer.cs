using System.Security.Cryptography;
using System.Text;

namespace HandoffDapr.Core.Repositories;

/// <summary>
/// Branch names as the reference builds them (first three words of the group title, sanitised, plus a
/// 6-character suffix), except that the suffix is derived from (run, repository, launch generation) rather
/// than random: a retry reuses the same branch, and a launch whose answer was lost can be found again by it.
/// </summary>
public static class BranchNamer
{
    private const int SuffixLength = 6;
    private const int MaxPrefixLength = 60;

    /// <summary>The longest name made: the prefix, a dash and the suffix.</summary>
    public const int MaxLength = MaxPrefixLength + 1 + SuffixLength;
    private const string Alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";

    public static string Create(string? groupTitle, long runId, string repositoryFullName, int generation)
    {
        var prefix = SanitizePrefix(groupTitle);
        return $"{(prefix.Length == 0 ? "branch" : prefix)}-{Suffix(runId, repositoryFullName, generation)}";
    }

    internal static string SanitizePrefix(string? title)
    {
        if (string.IsNullOrWhiteSpace(title))
        {
            return string.Empty;
        }

        var words = title.Split((char[]?)null, 4, StringSplitOptions.RemoveEmptyEntries);
        var joined = string.Join('-', words.Take(3)).Replace('_', '-').ToLowerInvariant();

        var builder = new StringBuilder(joined.Length);
        foreach (var c in joined)
        {
            if (c is (>= '0' and <= '9') or (>= 'a' and <= 'z') or '-' or '_' or '/')
            {
                // Git refuses empty path components ("a//b"): collapse repeated slashes.
                if (c == '/' && builder.Length > 0 && builder[^1] == '/')
                {
                    continue;
                }

                builder.Append(c);
            }
        }

        var sanitized = builder.ToString();
        if (sanitized.Length > MaxPrefixLength)
        {
            sanitized = sanitized[..MaxPrefixLength];
        }

        // Git refuses a leading '/' or '-' and a trailing '/'.
        return sanitized.TrimStart('/', '-').TrimEnd('/');
    }

    internal static string Suffix(long runId, string repositoryFullName, int generation)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes($"{runId}\n{repositoryFullName.ToLowerInvariant()}\n{generation}"), hash);

        Span<char> suffix = stackalloc char[SuffixLength];
        for (var i = 0; i < SuffixLength; i++)
        {
            suffix[i] = Alphabet[hash[i] % Alphabet.Length];
        }

        return new string(suffix);
    }
}
