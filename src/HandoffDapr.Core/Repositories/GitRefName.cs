namespace HandoffDapr.Core.Repositories;

/// <summary>The subset of <c>git check-ref-format --branch</c> rules a base branch from the snapshot must meet.</summary>
public static class GitRefName
{
    private const int MaxLength = 255;

    public static bool IsValidBranch(string? branch)
    {
        if (string.IsNullOrEmpty(branch) || branch.Length > MaxLength)
        {
            return false;
        }

        // "HEAD" names the checked-out commit, never a branch: git refuses to create it, so a launch on it would fail.
        // No component may start with '.' or end with ".lock": the first and the inner ones too, not only those after a
        // '/' and the last: git refuses ".main" and "release.lock/1", and a launch on them would only be sent to fail.
        if (branch[0] is '-' or '/' or '.' || branch[^1] is '/' or '.' || branch is "@" or "HEAD"
            || branch.EndsWith(".lock", StringComparison.Ordinal)
            || branch.Contains(".lock/", StringComparison.Ordinal)
            || branch.Contains("..", StringComparison.Ordinal)
            || branch.Contains("//", StringComparison.Ordinal)
            || branch.Contains("@{", StringComparison.Ordinal)
            || branch.Contains("/.", StringComparison.Ordinal))
        {
            return false;
        }

        foreach (var c in branch)
        {
            if (c < 0x20 || c == 0x7f || c is ' ' or '~' or '^' or ':' or '?' or '*' or '[' or '\\')
            {
                return false;
            }
        }

        return true;
    }
}
