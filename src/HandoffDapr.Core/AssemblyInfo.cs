namespace HandoffDapr.Core;
