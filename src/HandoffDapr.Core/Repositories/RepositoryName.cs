using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace HandoffDapr.Core.Repositories;

/// <summary>A GitHub <c>owner/name</c>, validated against GitHub's naming rules before any provider call.</summary>
public readonly record struct RepositoryName
{
    private const int MaxOwnerLength = 39;
    private const int MaxNameLength = 100;

    private RepositoryName(string owner, string name)
    {
        Owner = owner;
        Name = name;
    }

    public string Owner { get; }
    public string Name { get; }
    public string FullName => $"{Owner}/{Name}";

    public override string ToString() => FullName;

    /// <summary>
    /// Accepts exactly <c>owner/name</c>; anything else (URLs, paths, spaces, control characters) is rejected. A name
    /// ending in <c>.git</c> is read without it: GitHub has no such repository (it drops the suffix, and
    /// github.com/acme/shop.git is acme/shop), so both spellings are one repository, given one agent.
    /// </summary>
    public static bool TryParse(string? fullName, [NotNullWhen(true)] out RepositoryName? repository)
    {
        repository = null;
        if (string.IsNullOrEmpty(fullName))
        {
            return false;
        }

        var parts = fullName.Split('/');
        if (parts.Length != 2 || !IsValidOwner(parts[0]) || !IsValidName(parts[1]))
        {
            return false;
        }

        var name = parts[1].EndsWith(GitSuffix, StringComparison.OrdinalIgnoreCase) ? parts[1][..^GitSuffix.Length] : parts[1];
        if (!IsValidName(name))
        {
            return false;
        }

        repository = new RepositoryName(parts[0], name);
        return true;
    }

    private const string GitSuffix = ".git";

    /// <summary>GitHub logins: 1–39 ASCII letters, digits and single inner hyphens.</summary>
    public static bool IsValidOwner(string owner)
    {
        if (owner.Length is 0 or > MaxOwnerLength || owner[0] == '-' || owner[^1] == '-' || owner.Contains("--", StringComparison.Ordinal))
        {
            return false;
        }

        return owner.All(c => char.IsAsciiLetterOrDigit(c) || c == '-');
    }

    /// <summary>GitHub repository names: 1–100 of <c>[A-Za-z0-9._-]</c>, never <c>.</c> and never containing <c>..</c>.</summary>
    public static bool IsValidName(string name)
    {
        if (name.Length is 0 or > MaxNameLength || name is "." or ".." || name.Contains("..", StringComparison.Ordinal))
        {
            return false;
        }

        return name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-');
    }

    /// <summary>
    /// This repository's pull request that <paramref name="url"/> links to, in its canonical form
    /// <c>https://github.com/{owner}/{name}/pull/{number}</c>; null when it links to none of them. Owner and name in any
    /// letter case (GitHub's are case-insensitive); http or https; a tab of the pull request (<c>/files</c>), a query
    /// or a fragment after the number.
    /// </summary>
    public string? PullRequestLinkedBy(string? url)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("https" or "http") || !uri.IsDefaultPort
            || uri.UserInfo.Length > 0 || uri.Host is not ("github.com" or "www.github.com"))
        {
            return null;
        }

        // "", owner, name, "pull", number, then perhaps a tab
        var segments = uri.AbsolutePath.Split('/');
        return segments is [_, var owner, var name, "pull", { Length: > 0 and <= 18 } digits, ..]
            && digits.All(char.IsAsciiDigit)
            && long.Parse(digits, CultureInfo.InvariantCulture) is > 0 and var number
            && string.Equals(owner, Owner, StringComparison.OrdinalIgnoreCase)
            && string.Equals(name, Name, StringComparison.OrdinalIgnoreCase)
            ? string.Create(CultureInfo.InvariantCulture, $"https://github.com/{owner}/{name}/pull/{number}")
            : null;
    }

    /// <summary>Whether <paramref name="named"/> is this repository's <c>owner/name</c>, in any letter case.</summary>
    public bool IsNamedBy(string? named) =>
        TryParse(named, out var other) && string.Equals(other.Value.FullName, FullName, StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// A client-safe echo of a rejected name: printable, bounded, never raw input. Format characters go too: a bidi
    /// override or isolate would show the rest of a log line reordered, a zero-width one hide text in it.
    /// </summary>
    public static string DescribeRejected(string? raw)
    {
        if (string.IsNullOrEmpty(raw))
        {
            return "(empty)";
        }

        return Serialization.PrintableText.Bounded(raw, 100);
    }
}
