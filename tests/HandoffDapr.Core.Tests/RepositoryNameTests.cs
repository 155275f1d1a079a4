using HandoffDapr.Core.Repositories;

namespace HandoffDapr.Core.Tests;

public sealed class RepositoryNameTests
{
    [Theory]
    [InlineData("acme/shop")]
    [InlineData("a/b")]
    [InlineData("acme-corp/my.repo_name-2")]
    [InlineData("A1/.github")]
    public void Valid_github_names_are_accepted(string name)
    {
        Assert.True(RepositoryName.TryParse(name, out var parsed));
        Assert.Equal(name, parsed!.Value.FullName);
    }

    [Theory]
    [InlineData("acme/shop.git", "acme/shop")]
    [InlineData("acme/shop.GIT", "acme/shop")]
    [InlineData("acme/my.git.tools.git", "acme/my.git.tools")]
    [InlineData("acme/gitops", "acme/gitops")]
    public void A_name_ending_in_dot_git_is_the_repository_without_it_as_on_github(string name, string repository)
    {
        Assert.True(RepositoryName.TryParse(name, out var parsed));
        Assert.Equal(repository, parsed!.Value.FullName);
        Assert.True(parsed.Value.IsNamedBy("acme/shop.git") == (repository == "acme/shop"));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("acme/.git")]
    [InlineData("acme/a..git")]
    [InlineData("acme")]
    [InlineData("acme/..")]
    [InlineData("acme/.")]
    [InlineData("../etc")]
    [InlineData("acme/sh op")]
    [InlineData("https://github.com/acme/shop")]
    [InlineData("acme/shop/extra")]
    [InlineData("-acme/shop")]
    [InlineData("acme-/shop")]
    [InlineData("ac--me/shop")]
    [InlineData("acme/shop\n")]
    [InlineData("acme/shöp")]
    [InlineData("acme/a..b")]
    public void Anything_else_is_rejected(string? name) => Assert.False(RepositoryName.TryParse(name, out _));

    [Fact]
    public void Owner_and_name_lengths_follow_github()
    {
        Assert.True(RepositoryName.TryParse(new string('a', 39) + "/" + new string('b', 100), out _));
        Assert.False(RepositoryName.TryParse(new string('a', 40) + "/b", out _));
        Assert.False(RepositoryName.TryParse("a/" + new string('b', 101), out _));
    }

    [Fact]
    public void Rejected_name_is_echoed_printable_and_bounded()
    {
        var echoed = RepositoryName.DescribeRejected("evil\r\nX-Injected: 1\u0000" + new string('x', 500));

        Assert.DoesNotContain('\n', echoed);
        Assert.DoesNotContain('\u0000', echoed);
        Assert.True(echoed.Length <= 101);
        Assert.Equal("(empty)", RepositoryName.DescribeRejected(null));
    }

    [Theory]
    [InlineData("main", true)]
    [InlineData("release/1.2", true)]
    [InlineData("main..evil", false)]
    [InlineData("-main", false)]
    [InlineData("main.lock", false)]
    [InlineData("a b", false)]
    [InlineData("a//b", false)]
    [InlineData("a@{b", false)]
    [InlineData("a~b", false)]
    // Every component, the first and inner ones too: none may start with '.' or end with ".lock" (git check-ref-format).
    [InlineData(".main", false)]
    [InlineData("release/.next", false)]
    [InlineData("release.lock/1.2", false)]
    [InlineData("a/b.lock/c", false)]
    [InlineData("release/v1.lockdown", true)]
    [InlineData("v1.2/fix", true)]
    // git check-ref-format --branch refuses "HEAD" itself; a branch that only contains it is fine.
    [InlineData("HEAD", false)]
    [InlineData("HEAD/fix", true)]
    [InlineData("fix-HEAD", true)]
    public void Base_branches_follow_git_ref_rules(string branch, bool valid) => Assert.Equal(valid, GitRefName.IsValidBranch(branch));

    [Theory]
    [InlineData("https://github.com/acme/shop/pull/5", "https://github.com/acme/shop/pull/5")]
    [InlineData("https://github.com/acme/shop/pull/5/files", "https://github.com/acme/shop/pull/5")]
    [InlineData("https://github.com/acme/shop/pull/5/commits/abc", "https://github.com/acme/shop/pull/5")]
    [InlineData("http://github.com/acme/shop/pull/5", "https://github.com/acme/shop/pull/5")]
    [InlineData("https://www.github.com/Acme/Shop/pull/5/?x=1#top", "https://github.com/Acme/Shop/pull/5")]
    [InlineData("https://github.com/acme/shop/pull/007", "https://github.com/acme/shop/pull/7")]
    [InlineData("https://github.com/acme/shop/pull/0000000005/files", "https://github.com/acme/shop/pull/5")]
    [InlineData("https://github.com/acme/shop/pull/0", null)]
    [InlineData("https://github.com/evil/shop/pull/5", null)]
    [InlineData("https://github.com/acme/shop/issues/5", null)]
    [InlineData("https://github.com/acme/shop/pull/5x", null)]
    [InlineData("https://github.com:8443/acme/shop/pull/5", null)]
    [InlineData("https://user@github.com/acme/shop/pull/5", null)]
    [InlineData("https://github.com.evil.example/acme/shop/pull/5", null)]
    [InlineData("ftp://github.com/acme/shop/pull/5", null)]
    public void Link_into_one_of_the_repositorys_pull_requests_gives_its_canonical_link(string url, string? expected)
    {
        Assert.True(RepositoryName.TryParse("acme/shop", out var repository));

        Assert.Equal(expected, repository.Value.PullRequestLinkedBy(url));
    }

    [Theory]
    [InlineData("äcme/shop")]
    [InlineData("ac_me/shop")]
    [InlineData("ac.me/shop")]
    public void Owner_with_anything_but_ascii_letters_digits_and_hyphens_is_rejected(string name) =>
        Assert.False(RepositoryName.TryParse(name, out _));

    [Theory]
    [InlineData("https://github.com/acme/shop/pull/1000000000000000000")]
    [InlineData("https://github.com/acme/shop/pull/9999999999999999999")]
    public void Pull_request_number_longer_than_18_digits_links_to_nothing(string url)
    {
        Assert.True(RepositoryName.TryParse("acme/shop", out var repository));

        // 19 digits may not fit a long: refused before parsing rather than thrown on.
        Assert.Null(repository.Value.PullRequestLinkedBy(url));
    }

    [Fact]
    public void Rejected_name_echo_replaces_a_lone_surrogate() =>
        Assert.Equal("a?b", RepositoryName.DescribeRejected("a\ud800b"));

    /// <summary>
    /// A bidi override in a repository owner from event data reached the log as-is ("Run 500: \u202eevil/r? not launched"),
    /// showing the line's text reordered; zero-width characters hide text the same way.
    /// </summary>
    [Theory]
    [InlineData("\u202eevil/r", "?evil/r")]
    [InlineData("a\u2066b\u2069c", "a?b?c")]
    [InlineData("ev\u200bil\u200d/r\ufeff", "ev?il?/r?")]
    public void Rejected_name_echo_replaces_bidi_and_zero_width_characters(string raw, string echoed) =>
        Assert.Equal(echoed, RepositoryName.DescribeRejected(raw));

    [Fact]
    public void Rejected_name_over_100_characters_is_cut_and_marked_with_an_ellipsis()
    {
        Assert.Equal(new string('x', 100) + "…", RepositoryName.DescribeRejected(new string('x', 101)));
        Assert.Equal(new string('x', 100), RepositoryName.DescribeRejected(new string('x', 100)));
    }

    [Fact]
    public void Base_branch_of_at_most_255_characters_is_accepted()
    {
        Assert.True(GitRefName.IsValidBranch(new string('b', 255)));
        Assert.False(GitRefName.IsValidBranch(new string('b', 256)));
    }

    [Theory]
    [InlineData("/main")]
    [InlineData("main/")]
    [InlineData("main.")]
    [InlineData("@")]
    [InlineData("")]
    [InlineData(null)]
    public void Base_branch_with_an_edge_git_refuses_is_refused(string? branch) => Assert.False(GitRefName.IsValidBranch(branch));

    [Theory]
    [InlineData("a\tb")]
    [InlineData("a\u001fb")]
    [InlineData("a\u007fb")]
    [InlineData("a:b")]
    [InlineData("a?b")]
    [InlineData("a*b")]
    [InlineData("a[b")]
    [InlineData("a^b")]
    [InlineData("a\\b")]
    public void Base_branch_with_a_character_git_refuses_is_refused(string branch) => Assert.False(GitRefName.IsValidBranch(branch));

    [Theory]
    [InlineData("/shop")]
    [InlineData("acme/")]
    [InlineData("/")]
    public void Empty_owner_or_name_is_rejected(string name) => Assert.False(RepositoryName.TryParse(name, out _));
}
