"""Words never taken as names on their own (modern and Early Modern English)."""

STOPWORDS = frozenset(
    """
a about above after again against all almost alone along already also although always am
among an and another any anybody anyone anything are aren't around as ask at away back be
became because become been before began behind being below beside best better between beyond
both but by came can cannot could did didn't do does doesn't doing don't done down during
each either else enough even ever every everyone everything far few first for from further
get gets give given go goes going gone good got great had has hasn't have haven't having he
he's her here here's hers herself him himself his how however i i'd i'll i'm i've if in
indeed into is isn't it it's its itself just keep know last least less let let's like little
long made make many may maybe me might mine more most much must my myself neither never new
next no nobody none nor not nothing now of off often oh ok okay old on once one only or
other others our ours ourselves out over own perhaps please put quite rather really right
said same say says see seem seems shall she she's should since so some something soon still
such sure take than thank thanks that that's the their theirs them themselves then there
there's these they they're thing things think this those though through thus till to today
together too took toward towards under until up upon us very was wasn't way we we're well
went were what what's when where which while who whom whose why will with within without
won't would yes yet you you'd you'll you're you've your yours yourself yourselves hello hi
hey yeah sorry also anyway actually maybe sure true false tis twas thou thee thy thine ye hath doth
dost art wilt shalt hast 'tis 'twas o nay ay aye alas alack farewell hence hither thither
whither wherefore ere anon prithee methinks forsooth marry sirrah fie pray beseech come go
hark lo tush mark speak hear look stay peace enter exit exeunt good noble worthy sir madam
lord lady master masters friends friend citizen citizens first second third fourth fifth
messenger servant all both monday tuesday wednesday thursday friday saturday sunday january
february march april june july august september october november december
""".split()
)
