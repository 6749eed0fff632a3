"""Write the ticket-routing data set: support tickets of Larkspur Goods routed to 5 queues.

    python examples/ticket-routing/make_data.py        # rewrites data/{train,val,test}.jsonl

Every fragment below was written by hand for this project; the store and everything in
it are fictional (see examples/customer-service/data/README.md for the store's policies).
A ticket is one *core* (the customer's actual problem, which decides the queue) wrapped
in a greeting, an opener, a class-specific detail, sometimes an aside that mentions
another queue's topic, a closer and a sign-off, then roughened with typos, lowercase or
dropped apostrophes. Slots ({order}, {product}, {amount}, ...) are filled at random.

The split is by core: all tickets built on one core land in the same split, so the
test split asks about problems the model never saw in training, in new words; no
normalised text occurs twice anywhere. Seeded, so the files are reproducible.
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path

SEED = 20240611
TICKETS_PER_CORE = 4
SPLIT = {"train": 0.70, "val": 0.15, "test": 0.15}
OUT = Path(__file__).resolve().parent / "data"

# ---------------------------------------------------------------- cores: the problem, which decides the queue

CORES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for order {order}. Both charges of {amount} are on my {card} statement.",
        "Why was my card charged {amount} when the order total was {amount2}?",
        "I cancelled an order ten minutes after placing it, but the {amount} charge is still on my card.",
        "My Sprig Pay installment came out twice this month.",
        "Can I split a {amount} order into payments with Sprig Pay? I don't see how to pick it.",
        "The code HELLOLARK didn't take the 15% off and I ended up paying full price.",
        "The price of the {product} dropped a few days after I bought it. Can I get the difference back?",
        "There is a pending hold of {amount} on my card for an order you cancelled last week.",
        "I need an invoice with our company name on it for order {order}, for my expense report.",
        "My gift card shows a balance of $0.00 but I only spent about half of it.",
        "Can I pay with two gift cards plus my {card} on one order?",
        "I was charged sales tax even though our tax-exempt certificate is on file.",
        "I was billed the $18.75 international fee but I live in Ohio.",
        "Our Trade Program invoice says Net 20 but the due date on it is only 10 days out.",
        "I added LarkCare to my {product} once and got charged for it twice.",
        "I redeemed 800 Petal Points at checkout but the $8 never came off my total.",
        "My card was declined at checkout, yet the money still left my bank account.",
        "I picked store credit for my refund and didn't get the 8% bonus you advertise.",
        "There is a charge of {amount} from LARKSPUR GOODS DUBUQUE IA on my statement that I don't recognise.",
        "Can I switch the payment on an order that hasn't shipped from my {card} to PayPal?",
        "Apple Pay took the money but then I got an email saying my payment failed.",
        "How long until the money is back on my card after you cancelled my order?",
        "You charged me the $39 oversized surcharge for a candle.",
        "Is there a late fee if I miss a Sprig Pay payment? I missed the second one.",
        "The checkout added a $14.50 express charge that I never selected.",
        "An agent on the phone promised me a price-match credit and it never showed up on my account.",
        "I paid off my Sprig Pay plan early, but the app still shows payments due.",
        "charged twice?? {amount} x2",
        "wrong amount on my card statement",
        "We'd like to pay our Trade account invoice by bank transfer. What details should we use?",
        "I need an itemised receipt that shows the tax separately for order {order}.",
        "The {product} was on sale in my cart but I was charged the full price.",
        "Could you send me a statement of every charge on my account from last year?",
        "My gift card was bought two years ago and now it says expired. I thought they lasted seven years.",
        "I was charged $6.25 gift wrap for four items but only two were wrapped.",
        "I bought a {amount} e-gift card for my sister and the charge went through, "
        "but I want to pay for it with PayPal instead.",
        "Do you take Discover? I only have that card and American Express.",
        "Why do I see three separate charges for one order?",
        "Please refund the extra {amount} you took. I have the receipt showing the correct price.",
        "Can I get an invoice addressed to my business rather than to me personally?",
    ],
    "shipping": [
        "Where is my order {order}? It was supposed to be here by {weekday}.",
        "My tracking number {tracking} hasn't updated in {days} days.",
        "Tracking says delivered but there is no package at my door, in the lobby, or with the neighbours.",
        "Can I change the delivery address on order {order}? I moved last weekend.",
        "My {product} arrived with the box crushed flat and the inside broken in pieces.",
        "Do you ship to Canada? What would it cost to send a few things to Toronto?",
        "I paid for express delivery and it has been {days} business days already.",
        "How do I get Saturday delivery? I'm at work all week.",
        "The courier left my parcel out in the rain and everything inside is soaked.",
        "Only half my order came. The second box, with the {product}, never arrived.",
        "My order still says processing after {days} days. When will it ship?",
        "The freight company is supposed to call to schedule my sofa delivery but nobody ever answers their phone.",
        "Could you hold my parcel at a Parcelway Point? I'm away until {date}.",
        "The delivery photo shows a house that is not mine.",
        "Why is my order arriving in three separate boxes on different days?",
        "The driver marked 'delivery attempted' but nobody knocked. I was home the whole day.",
        "I ordered before 1:30 pm and it still didn't ship the same day.",
        "How do I add delivery instructions? Our building needs a gate code.",
        "It says shipped but the tracking link only says 'label created' since {weekday}.",
        "I need this by {date} for a party. Can you upgrade the shipping?",
        "My parcel went to my old apartment even though I updated my address before ordering.",
        "The tracking has shown my parcel sitting in Dubuque for a week.",
        "Missing package: order {order}, tracking {tracking}, nothing since {date}.",
        "Do you deliver to PO boxes?",
        "How long does standard shipping take to Arizona?",
        "The freight truck can't get up my driveway. Can the grill be delivered curbside instead?",
        "The box was open when it got here and the {product} was not inside.",
        "where is my stuff",
        "package never came",
        "tracking {tracking} stuck",
        "Can you combine my two open orders into one shipment?",
        "The estimated delivery date moves back a day every time I look.",
        "My delivery window was 8 to 12 today and nobody came.",
        "The carrier left the rug outside my building's front door and somebody took it.",
        "Can you ship to Mexico City, and will I have to pay anything at the border?",
        "One of my two tracking numbers doesn't work at all on the Parcelway site.",
        "Will the freight team carry the dining table inside? It weighs about 80 lbs.",
        "I got a text saying my parcel is delayed by weather. Is there a new estimate?",
        "I received a parcel with someone else's name and address on the label.",
        "It's been two weeks and my order hasn't even left the warehouse.",
    ],
    "returns": [
        "I'd like to return the {product}. It doesn't fit the space we have.",
        "How do I start a return for order {order}?",
        "I sent my {product} back {days} days ago and still haven't received the refund for it.",
        "Can I exchange the 5x7 rug for the 8x10?",
        "I ordered the {product} in sage and you sent rust. I want the right colour instead.",
        "Is it too late to return a gift that was delivered in early December? It's the middle of January now.",
        "Why was $3.50 taken off the refund for my return?",
        "The {product} was tagged Last Light. Can I still return it if it's unopened?",
        "I lost my Return Authorization number. What do I write on the box?",
        "I want to return the sofa. I know it's over 50 lbs, so how much is the restocking fee?",
        "Where is the closest Parcelway Point where I can drop off a return?",
        "I returned two items but was only refunded for one of them.",
        "I threw away the original packaging. Can I still return the lamp?",
        "The return label you emailed me won't scan at the kiosk.",
        "Can I return a gift without the person who gave it finding out?",
        "I'd rather have store credit than a refund for the return I'm sending.",
        "You sent me two {product}s and I only ordered one. How do I send the extra back?",
        "My return shows as received at your warehouse, but the return status still says in transit.",
        "I changed my mind about the {product}. It's still sealed.",
        "Exchange request: the duvet cover is a queen and I need a king.",
        "The returns page says my item isn't eligible. Why not?",
        "Can I send back just two of the four dining chairs from the set?",
        "We want to send back the entire order. None of it works in our house.",
        "I posted my return with my own carrier. Do I get that postage back?",
        "How long after my return reaches you will I see the money?",
        "The replacement you sent for my exchange is also the wrong size.",
        "return please",
        "how do i send this back",
        "Return for {order}: wrong item",
        "Is there a fee to send back a mattress topper?",
        "My return was refused for being 'used', but I only took it out of the box.",
        "Can I return a candle I lit once? The scent is far too strong for us.",
        "My return box is too big for the kiosk. Could you pick it up from my house?",
        "Our camping trip was cancelled so I'd like to return the tent, never used.",
        "Please cancel my return. I've decided to keep the armchair.",
        "Does the holiday return deadline apply to things delivered on December 26?",
        "I sent the rug back with the RTN number on it but got an email saying you can't match it to an order.",
        "Do I need to include the assembly hardware when I return the bookshelf?",
        "Can I exchange the chair for a different product altogether rather than another colour?",
        "I want to return the {product}, it looks nothing like the photos.",
    ],
    "technical": [
        "I can't sign in. It says my password is wrong even right after I reset it.",
        "The password reset link had already expired by the time I clicked it.",
        "Your app crashes every time I open my cart on my {device}.",
        "The checkout page just keeps spinning after I press Place Order in {browser}.",
        "I'm not receiving the two-step verification code by text.",
        "I lost my phone and my backup codes. How do I get back into my account?",
        "My order history is empty even though I've ordered from you several times.",
        "The website shows a 500 error when I try to open order {order}.",
        "I changed my email address but the confirmation link never arrived.",
        "The Gather List says it's full, but I only have about 30 items on it.",
        "The promo code box doesn't appear at checkout in the app.",
        "Please close my account and delete all my data.",
        "The button to link my guest order to my account doesn't do anything when I tap it.",
        "The app logs me out every few minutes.",
        "Product photos won't load in {browser}; I just see grey boxes.",
        "I keep getting 'session expired' every time I try to save my address.",
        "I get your newsletter twice and the unsubscribe link gives an error page.",
        "Someone else's name is showing in my account profile.",
        "I got an email saying my password was changed, and it wasn't me.",
        "The search bar returns nothing, whatever I type.",
        "The app won't install on my {device}. It says the device is not compatible.",
        "The contact form won't accept my photo. It says the file type isn't supported.",
        "My account is locked after too many attempts and the unlock email never comes.",
        "The 'Notify me' button never sends any email when things come back in stock.",
        "My Petal Points show 0 in the app but 1,200 on the website.",
        "The 'view in your room' feature shows a black screen on my {device}.",
        "Your website is suddenly in French and I can't switch it back to English.",
        "The live chat window closes as soon as I start typing.",
        "Sign in with Apple stopped working for me.",
        "the app is broken",
        "cant log in",
        "site down?",
        "In dark mode the app makes all the prices invisible.",
        "I never get any emails from you. No order confirmations, no shipping updates, nothing.",
        "The birthday field in my profile won't save.",
        "Address autocomplete keeps changing my street to a different one.",
        "The app and the website show different statuses for the same order.",
        "The captcha on the sign-up page never accepts my answer.",
        "Where do I turn on two-step verification? I can't find it under Security.",
        "I accidentally made two accounts with different emails. Can you merge them?",
    ],
    "product": [
        "Is the Stillwater tent waterproof enough for a weekend of heavy rain?",
        "The zipper on my {product} broke after {days} days of normal use.",
        "The left burner on my Ember Ridge grill won't light anymore.",
        "What are the exact dimensions of the teak side table?",
        "Can I use the Fieldnote Home skillet on an induction hob?",
        "How much weight can the Drift hammock hold?",
        "My Hollow Pine candle tunnels straight down the middle and won't burn evenly.",
        "Are the linen sheets pre-washed? Will they shrink?",
        "The bookshelf came with two screws missing from the hardware bag.",
        "The outdoor rug has faded a lot after one summer. Is that normal?",
        "Can the string lights stay up outside through the winter?",
        "Is the wool throw machine washable?",
        "The seam on the camp chair split the first time I sat in it.",
        "When will the sage green duvet cover be back in stock?",
        "Does the floor lamp come with a bulb, and what wattage can it take?",
        "The glaze on my mugs is crazing after a few dishwasher cycles.",
        "What's the difference between the Stillwater 2-person and 4-person tents?",
        "The drawer on my nightstand won't close flush.",
        "Can I replace the lid gasket on the cooler? Mine has cracked.",
        "Can I use the cast iron skillet over a campfire?",
        "The hammock ropes are fraying near the rings after two weekends.",
        "Are your candles soy or paraffin, and is there lead in the wicks?",
        "The instructions for the dining bench skip from step 3 to step 5.",
        "How should I clean the teak table? It's turning grey.",
        "Can the Ember Ridge grill be converted to natural gas?",
        "A tent pole snapped in light wind on our very first night.",
        "Is the bath towel set 100% cotton?",
        "The cushion covers shrank after one cold wash.",
        "Will the outdoor rug trap moisture on a wooden deck?",
        "My floor lamp flickers even with a brand new bulb.",
        "does the skillet come seasoned",
        "tent leaks",
        "Warranty claim: a grill burner has rusted through after {days} months.",
        "Is the hammock stand sold separately?",
        "The cooler only keeps ice for a day, but the listing says four days.",
        "What fill is in the down-alternative pillows? I'm allergic to feathers.",
        "The paint on the bistro chairs is already chipping.",
        "Can I get fabric swatches for the armchair before I decide?",
        "Is the large ceramic planter frost-proof?",
        "The candle jar cracked while it was burning.",
    ],
}

# ---------------------------------------------------------------- wrapping fragments

DETAILS: dict[str, list[str]] = {
    "billing": [
        "I've attached a screenshot of my bank statement.", "The charge posted on {date}.",
        "My card ends in {last4}.", "The order total at checkout was {amount}.",
        "I'd like this sorted before my statement closes.", "The transaction reference is {txn}.",
        "My bank says it's not on their side.", "Order number {order}.",
    ],
    "shipping": [
        "Tracking: {tracking}.", "It was meant to arrive by {weekday}.", "My ZIP code is {zip}.",
        "The order number is {order}.", "I already checked with the building office.",
        "The carrier's site just says 'in transit'.", "I've been waiting in all day for it.",
        "Order {order}, shipped to {city}.",
    ],
    "returns": [
        "The order number is {order}.", "It's still in the box with the tags on.",
        "I bought it {days} days ago.", "My RTN number is RTN{digits}.",
        "A refund to my card would be best.", "I'm happy to drop it off at a Parcelway Point.",
        "It was a gift from my aunt.", "Nothing is damaged, it's just not right for us.",
    ],
    "technical": [
        "I'm on {browser} on {os}.", "I've already cleared my cache and cookies.",
        "Same thing on my {device}.", "The error code is {errcode}.", "I've reinstalled the app twice.",
        "My account email is {email}.", "It started after the last app update.",
        "I've tried incognito mode as well.",
    ],
    "product": [
        "I bought it {days} days ago.", "Order {order}, if that helps.",
        "I followed the care instructions exactly.", "I've attached a couple of photos.",
        "Mine is the {color} one.", "We use it on our {place}.", "It's been used maybe three times.",
        "The listing didn't say either way.",
    ],
}

# Incidental mentions of another queue's topic: the ticket touches it, but it is not the problem.
ASIDES: dict[str, list[str]] = {
    "billing": [
        "The payment itself went through fine.", "I paid with Sprig Pay, in case that matters.",
        "I used a gift card for part of it.", "I know the charge on my card was right.",
    ],
    "shipping": [
        "Delivery was really quick, to be fair.", "It arrived on time, so no complaints there.",
        "The box got here in one piece.", "The delivery driver was lovely, by the way.",
    ],
    "returns": [
        "I don't want to return it, I just want this fixed.", "I'd rather not send anything back.",
        "I know I could return it, but I'd rather keep it.", "Please don't just tell me to return it.",
    ],
    "technical": [
        "Ordering on your website was easy.", "I'd use the app but I prefer email.",
        "I tried the live chat first but nobody was there.", "I logged in fine to find my order number.",
    ],
    "product": [
        "The {product} itself is lovely.", "We love the quality of your things.",
        "There's nothing wrong with the item itself.", "It's a great {product}, for the record.",
    ],
}
ASIDE_TOPICS = {  # which other topics may come up in passing in a ticket of each queue
    "billing": ["shipping", "product", "technical"],
    "shipping": ["billing", "product", "technical"],
    "returns": ["billing", "shipping", "technical"],
    "technical": ["billing", "shipping", "product"],
    "product": ["shipping", "billing", "returns"],
}

# Background that says nothing about the queue; it makes some tickets long, as real ones are.
BACKSTORY = [
    "We're furnishing a new place, so I've ordered quite a lot from you over the past month.",
    "My partner placed the order but I'm the one dealing with it.",
    "I've been a Petal Points member for a couple of years and usually have no problems.",
    "This was meant to be a birthday present for my dad.",
    "We're hosting family next weekend, so the timing really matters to me.",
    "I run a small holiday rental and bought several things for it.",
    "I called yesterday but the wait was over 40 minutes, so I'm trying email instead.",
    "English is not my first language, sorry for any mistakes.",
    "I've told three friends about your store, so I'd like this to go well.",
    "I work nights, so email is easiest for me.",
]

GREETINGS = ["Hi,", "Hello,", "Hey there,", "Good morning,", "Dear Larkspur Goods team,", "Hi Larkspur,",
             "To whom it may concern,", "Hello support,", "Hiya,", "Good afternoon,", "Hi team,"]
OPENERS = {
    "polite": ["I hope you can help.", "Quick question for you.", "I need a little help, please.",
               "First time contacting you, so bear with me.", "Hoping someone can sort this out.",
               "Sorry to bother you.", "Thanks for reading this."],
    "neutral": ["Writing about an order.", "I have an issue.", "Following up on something.",
                "Not sure who handles this.", "Got a problem."],
    "angry": ["This is the third time I'm writing about this.", "I'm really frustrated right now.",
              "Honestly, this is unacceptable.", "I've been a customer for years and I've never been this annoyed.",
              "Nobody answered my last two emails.", "I am FURIOUS.", "Seriously?"],
}
CLOSERS = {
    "polite": ["Thanks so much!", "Thank you for your help.", "Appreciate it.", "Thanks in advance.",
               "Looking forward to hearing from you.", "Have a great day.", "Many thanks."],
    "neutral": ["Let me know.", "Please advise.", "Thanks.", "Waiting for your reply.", ""],
    "angry": ["Fix this now.", "I expect a reply today.", "I'm about to leave a one-star review.",
              "Very disappointed.", "Sort it out please!!", "Not impressed at all.",
              "Don't send me another template reply."],
}
SIGNOFFS = ["- {name}", "{name}", "Best, {name}", "Regards,\n{name}", "Sent from my iPhone", "Cheers, {name}", ""]

# ---------------------------------------------------------------- slot values

SLOTS: dict[str, list[str]] = {
    "product": ["Stillwater 4-person tent", "Ember Ridge 3-burner grill", "Hollow Pine soy candle", "Drift hammock",
                "Fieldnote Home skillet", "outdoor rug", "linen duvet cover", "stoneware mug set", "teak side table",
                "camp chair", "string lights", "wool throw", "floor lamp", "rolling cooler", "bistro set",
                "bath towel set", "oak bookshelf", "rattan armchair", "ceramic planter", "picnic blanket"],
    "card": ["Visa", "Mastercard", "Amex", "Discover", "debit card", "credit card"],
    "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "yesterday", "last week"],
    "date": ["March 3", "the 14th", "June 21", "next Friday", "October 2", "the 28th", "April 9", "May 30"],
    "browser": ["Chrome", "Safari", "Firefox", "Edge", "the Samsung browser"],
    "os": ["Windows 11", "a MacBook", "an iPad", "Android", "a Chromebook"],
    "device": ["iPhone", "Android phone", "Pixel", "iPad", "Galaxy tablet", "old iPhone 8"],
    "color": ["sage", "rust", "charcoal", "oat", "navy", "forest green", "natural"],
    "place": ["back porch", "balcony", "deck", "camping trips", "patio", "kitchen"],
    "city": ["Madison", "Tucson", "Boise", "Raleigh", "Des Moines", "Spokane", "Albany"],
    "name": ["Dana", "Priya", "Marcus", "Elena K.", "Tom", "J. Alvarez", "Sam", "Beth", "Kenji", "Olu", "Maggie R."],
    "errcode": ["ERR_CHECKOUT_502", "E-1043", "AUTH_TIMEOUT", "0x80070005", "CART_SYNC_FAILED"],
}


def fill(template: str, rng: random.Random, chosen: dict[str, str] | None = None) -> str:
    """Fill each {slot} in ``template`` with a random value (numbers and ids are generated).

    ``chosen`` keeps one value per slot for a whole ticket, so its aside praises the same
    product that its core complains about.
    """
    chosen = {} if chosen is None else chosen

    def value(match: re.Match) -> str:
        slot = match.group(1)
        if slot not in chosen:
            chosen[slot] = random_value(slot)
        return chosen[slot]

    def random_value(slot: str) -> str:
        if slot in SLOTS:
            return rng.choice(SLOTS[slot])
        if slot == "order":
            return "LG" + "".join(rng.choices(string.digits, k=8))
        if slot == "tracking":
            return "PW" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=12))
        if slot in ("amount", "amount2"):
            return f"${rng.randint(12, 900)}.{rng.randint(0, 99):02d}"
        if slot == "days":
            return str(rng.randint(3, 21))
        if slot == "last4":
            return "".join(rng.choices(string.digits, k=4))
        if slot == "digits":
            return "".join(rng.choices(string.digits, k=7))
        if slot == "txn":
            return "".join(rng.choices(string.ascii_uppercase + string.digits, k=10))
        if slot == "zip":
            return "".join(rng.choices(string.digits, k=5))
        if slot == "email":
            return rng.choice(["dana.m", "pr1ya", "marcus.lee", "ek_home", "tomtom88"]) + "@example.com"
        raise KeyError(f"no values for slot {{{slot}}}")

    return re.sub(r"\{(\w+)\}", value, template)


# ---------------------------------------------------------------- roughening


def typo(word: str, rng: random.Random) -> str:
    """One keyboard slip: swap two letters, drop one, or double one."""
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 2)
    kind = rng.choice(["swap", "drop", "double"])
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def roughen(text: str, mood: str, rng: random.Random) -> str:
    """Typos, all-lowercase, dropped apostrophes, shouting: what real tickets look like."""
    if rng.random() < 0.3:
        words = text.split(" ")
        for _ in range(rng.randint(1, 3)):
            k = rng.randrange(len(words))
            words[k] = typo(words[k], rng)
        text = " ".join(words)
    if rng.random() < 0.15:
        text = text.lower()
    if rng.random() < 0.2:
        text = text.replace("'", "")
    if mood == "angry" and rng.random() < 0.4:
        text = re.sub(r"[.!]$", "!!!", text.rstrip())
    if mood == "angry" and rng.random() < 0.15:
        text = text.upper()
    return text


# ---------------------------------------------------------------- one ticket


def compose(core: str, label: str, rng: random.Random) -> str:
    """Wrap one filled core in the parts a customer might add around it."""
    short = len(core) < 40
    mood = rng.choices(["polite", "neutral", "angry"], weights=[4, 3, 2])[0]
    chosen: dict[str, str] = {}
    if short and rng.random() < 0.6:
        return roughen(fill(core, rng, chosen), mood, rng)
    if core[-1] not in ".?!" and rng.random() < 0.5:
        core += rng.choice(["?", ".", "!"])
    parts = []
    if rng.random() < 0.6:
        parts.append(rng.choice(GREETINGS))
    if rng.random() < 0.5:
        parts.append(rng.choice(OPENERS[mood]))
    body = [fill(core, rng, chosen)]
    if not short and rng.random() < 0.25:
        body[:0] = rng.sample(BACKSTORY, rng.choice([1, 1, 2]))
    if rng.random() < 0.55:
        body.append(fill(rng.choice(DETAILS[label]), rng, chosen))
    if rng.random() < 0.3:
        aside = fill(rng.choice(ASIDES[rng.choice(ASIDE_TOPICS[label])]), rng, chosen)
        body.insert(rng.randrange(len(body) + 1), aside)
    parts.extend(body)
    if rng.random() < 0.6:
        parts.append(rng.choice(CLOSERS[mood]))
    if rng.random() < 0.4:
        parts.append(fill(rng.choice(SIGNOFFS), rng, chosen))
    text = " ".join(p for p in parts if p)
    if rng.random() < 0.25:  # some people write in lines
        text = text.replace(". ", ".\n", rng.randint(1, 2))
    return roughen(text, mood, rng)


def normalised(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def build(seed: int = SEED) -> dict[str, list[dict[str, str]]]:
    """All tickets, split by core: every ticket built on one core lands in one split."""
    rng = random.Random(seed)
    splits: dict[str, list[dict[str, str]]] = {name: [] for name in SPLIT}
    seen: set[str] = set()
    for label, cores in CORES.items():
        order = list(range(len(cores)))
        rng.shuffle(order)
        n_test = round(SPLIT["test"] * len(cores))
        n_val = round(SPLIT["val"] * len(cores))
        assignment = {i: "test" for i in order[:n_test]}
        assignment.update({i: "val" for i in order[n_test:n_test + n_val]})
        for index, core in enumerate(cores):
            split = assignment.get(index, "train")
            made = 0
            for _ in range(50 * TICKETS_PER_CORE):  # retry on an exact duplicate (short cores repeat easily)
                text = compose(core, label, rng)
                key = normalised(text)
                if key in seen:
                    continue
                seen.add(key)
                splits[split].append({"text": text, "label": label})
                made += 1
                if made == TICKETS_PER_CORE:
                    break
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in build().items():
        with (OUT / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        counts = {label: sum(r["label"] == label for r in rows) for label in CORES}
        print(f"{name}: {len(rows)} tickets {counts}")


if __name__ == "__main__":
    main()
