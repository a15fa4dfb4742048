"""The sound concepts the bundled audio tower learns, each with captions and where its recordings come from.

Every source installs offline from Debian (licences in data/ATTRIBUTION.md): General MIDI
instruments and drums rendered by fluidsynth from tunes we write (fluid-soundfont-gm), speech by
espeak-ng, tones and noises by sox, and recorded sound effects from sound-theme-freedesktop,
minetest-data and supertuxkart-data. A concept is what a person would type; its captions are
paraphrases of it (training picks one at random, evaluation uses the first).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Concept:
    name: str
    captions: tuple[str, ...]
    kind: str  # "instrument" | "drums" | "speech" | "sox" | "files"
    params: dict = field(default_factory=dict)


def _instrument(name, captions, programs, low=48, high=84, chords=False):
    return Concept(name, captions, "instrument", {"programs": programs, "low": low, "high": high, "chords": chords})


def _drums(name, captions, notes, pattern="hits"):
    return Concept(name, captions, "drums", {"notes": notes, "pattern": pattern})


def _files(name, captions, *patterns):
    return Concept(name, captions, "files", {"patterns": patterns})


INSTRUMENTS = [
    _instrument("piano", ("a piano playing", "piano music", "someone playing the piano"), (0, 1, 2), 40, 88, True),
    _instrument("electric_piano", ("an electric piano", "a Rhodes electric piano playing"), (4, 5), 45, 84, True),
    _instrument("harpsichord", ("a harpsichord playing", "baroque harpsichord music"), (6,), 45, 84, True),
    _instrument("music_box", ("a music box melody", "a tinkling music box"), (10,), 72, 96),
    _instrument("glockenspiel", ("a glockenspiel", "a celesta playing bell-like notes"), (8, 9), 72, 100),
    _instrument("vibraphone", ("a vibraphone playing", "mellow vibraphone notes"), (11,), 55, 88),
    _instrument("marimba", ("a marimba or xylophone", "wooden mallet percussion melody"), (12, 13), 55, 90),
    _instrument("tubular_bells", ("church bells ringing", "tubular bells chiming"), (14,), 55, 80),
    _instrument("church_organ", ("a church organ", "pipe organ music in a church"), (19, 20), 36, 80, True),
    _instrument("electric_organ", ("an electric organ", "a rock organ playing chords"), (16, 17, 18), 40, 80, True),
    _instrument("accordion", ("an accordion playing", "accordion music"), (21, 23), 48, 80, True),
    _instrument("harmonica", ("a harmonica", "someone playing a blues harmonica"), (22,), 55, 84),
    _instrument("acoustic_guitar", ("an acoustic guitar", "someone strumming an acoustic guitar"), (24, 25), 40, 76, True),
    _instrument("electric_guitar", ("a clean electric guitar", "electric guitar playing"), (26, 27, 28), 40, 80),
    _instrument("distorted_guitar", ("a distorted electric guitar", "heavy rock guitar with distortion"), (29, 30), 40, 76, True),
    _instrument("bass_guitar", ("a bass guitar", "a deep bass line"), (32, 33, 34, 35), 28, 55),
    _instrument("violin", ("a violin playing", "a solo violin melody", "a fiddle"), (40, 110), 55, 96),
    _instrument("cello", ("a cello", "a deep cello melody"), (42,), 36, 67),
    _instrument("pizzicato", ("plucked pizzicato strings",), (45,), 48, 84),
    _instrument("harp", ("a harp", "someone playing the harp"), (46,), 40, 90, True),
    _instrument("strings", ("a string orchestra", "an orchestra of strings playing"), (48, 49), 40, 84, True),
    _instrument("choir", ("a choir singing", "voices singing aah together"), (52, 53), 48, 79, True),
    _instrument("trumpet", ("a trumpet", "a trumpet playing a tune"), (56, 59), 55, 82),
    _instrument("trombone", ("a trombone",), (57,), 40, 70),
    _instrument("tuba", ("a tuba", "a low brass tuba"), (58,), 28, 55),
    _instrument("french_horn", ("a french horn",), (60,), 41, 72),
    _instrument("brass_section", ("a brass section", "brass band fanfare"), (61, 62), 48, 80, True),
    _instrument("saxophone", ("a saxophone", "jazz saxophone"), (64, 65, 66, 67), 45, 80),
    _instrument("oboe", ("an oboe",), (68,), 58, 88),
    _instrument("clarinet", ("a clarinet",), (71,), 50, 86),
    _instrument("bassoon", ("a bassoon",), (70,), 34, 65),
    _instrument("flute", ("a flute", "someone playing the flute"), (73, 72), 60, 96),
    _instrument("pan_flute", ("a pan flute", "a recorder or pan pipes"), (74, 75), 60, 90),
    _instrument("whistling", ("someone whistling a tune", "whistling"), (78,), 65, 90),
    _instrument("synth_lead", ("a synthesizer lead", "an electronic synth melody"), (80, 81, 84, 87), 48, 84),
    _instrument("synth_pad", ("a synth pad", "ambient synthesizer chords"), (88, 89, 90, 91, 94, 95), 40, 80, True),
    _instrument("sitar", ("a sitar", "Indian sitar music"), (104,), 48, 80),
    _instrument("banjo", ("a banjo", "bluegrass banjo picking"), (105,), 48, 80),
    _instrument("koto", ("a koto or shamisen", "Japanese plucked strings"), (106, 107), 50, 84),
    _instrument("kalimba", ("a kalimba", "a thumb piano"), (108,), 60, 90),
    _instrument("bagpipes", ("bagpipes", "Scottish bagpipes playing"), (109,), 55, 80),
    _instrument("steel_drums", ("steel drums", "Caribbean steel pan"), (114,), 55, 85),
    # General MIDI's sound effects
    _instrument("seashore", ("ocean waves on a beach", "the sound of the sea"), (122,), 40, 70),
    _instrument("bird_tweet", ("birds chirping", "birds singing"), (123,), 60, 90),
    _instrument("telephone_ring", ("a telephone ringing", "a phone ringing"), (124,), 55, 80),
    _instrument("helicopter", ("a helicopter", "helicopter rotor blades"), (125,), 40, 70),
    _instrument("applause", ("applause", "a crowd clapping and cheering"), (126,), 50, 70),
    _instrument("gunshot", ("gunshots", "a gun firing"), (127,), 40, 70),
    _instrument("breath", ("someone breathing", "heavy breathing"), (121,), 50, 70),
]

DRUMS = [
    _drums("drum_beat", ("a drum kit playing a rock beat", "drums", "a drummer playing a beat"), (), "beat"),
    _drums("snare_roll", ("a snare drum roll", "a drum roll"), (38, 40), "roll"),
    _drums("bass_drum", ("a kick drum", "a bass drum thumping"), (35, 36)),
    _drums("hihat", ("hi-hat cymbals", "cymbals ticking"), (42, 44, 46)),
    _drums("crash_cymbal", ("a crash cymbal", "cymbals crashing"), (49, 57, 52, 55)),
    _drums("toms", ("tom-tom drums", "tom drums"), (41, 43, 45, 47, 48, 50)),
    _drums("hand_claps", ("hand claps", "someone clapping their hands"), (39,)),
    _drums("cowbell", ("a cowbell",), (56,)),
    _drums("tambourine", ("a tambourine", "a tambourine shaking"), (54,)),
    _drums("bongos", ("bongos and congas", "hand drums"), (60, 61, 62, 63, 64)),
    _drums("triangle", ("a triangle ringing",), (80, 81)),
    _drums("woodblock", ("a woodblock", "wooden clicks"), (76, 77)),
]

# short phrases per language (espeak-ng reads them); held-out recordings use other phrases
PHRASES = {
    "en": ["the weather is nice today", "please close the door behind you", "I will call you tomorrow morning",
           "the train leaves at seven o'clock", "where did you put my keys", "thank you very much for your help",
           "we are going to the beach this weekend", "can you hear me now", "the meeting starts in ten minutes",
           "my favourite colour is blue", "turn left at the next corner", "this is a recording of my voice",
           "one two three four five six seven", "good morning everybody", "let me tell you a story",
           "the dog ran across the garden", "dinner is ready", "I forgot my umbrella again"],
    "fr": ["bonjour tout le monde", "il fait beau aujourd'hui", "je vais au marché ce matin", "merci beaucoup",
           "où est la gare s'il vous plaît", "nous partons en vacances demain", "le chat dort sur le canapé",
           "je ne comprends pas la question"],
    "de": ["guten Morgen zusammen", "das Wetter ist heute schön", "ich fahre morgen nach Berlin", "vielen Dank",
           "wo ist der Bahnhof bitte", "wir essen heute Abend zusammen", "der Hund spielt im Garten",
           "ich habe keine Zeit"],
    "es": ["buenos días a todos", "hace buen tiempo hoy", "voy al mercado esta mañana", "muchas gracias",
           "dónde está la estación por favor", "mañana nos vamos de vacaciones", "el perro duerme en el sofá",
           "no entiendo la pregunta"],
    "it": ["buongiorno a tutti", "oggi fa bel tempo", "vado al mercato stamattina", "grazie mille",
           "dov'è la stazione per favore", "domani partiamo per le vacanze", "il gatto dorme sul divano",
           "non capisco la domanda"],
    "ru": ["доброе утро всем", "сегодня хорошая погода", "я иду в магазин", "большое спасибо",
           "где находится вокзал", "завтра мы едем в отпуск", "собака спит на диване", "я не понимаю вопрос"],
    "cmn": ["大家早上好", "今天天气很好", "我明天去北京", "非常感谢", "火车站在哪里", "我们周末去海边",
            "猫在沙发上睡觉", "我不明白这个问题"],
    "ja": ["おはようございます", "今日はいい天気ですね", "明日東京に行きます", "ありがとうございます",
           "駅はどこですか", "週末は海に行きます", "猫がソファで寝ています", "質問がわかりません"],
    "hi": ["सुप्रभात सभी को", "आज मौसम अच्छा है", "मैं कल दिल्ली जाऊँगा", "बहुत धन्यवाद", "स्टेशन कहाँ है",
           "हम सप्ताहांत में समुद्र तट पर जाएंगे", "बिल्ली सोफे पर सो रही है", "मुझे सवाल समझ नहीं आया"],
    "ar": ["صباح الخير للجميع", "الطقس جميل اليوم", "سأذهب إلى السوق", "شكرا جزيلا", "أين محطة القطار",
           "سنسافر غدا", "القطة نائمة على الأريكة", "لا أفهم السؤال"],
    "pt": ["bom dia a todos", "hoje está um dia bonito", "vou ao mercado esta manhã", "muito obrigado",
           "onde fica a estação", "amanhã vamos de férias", "o gato dorme no sofá", "não entendo a pergunta"],
    "tr": ["herkese günaydın", "bugün hava çok güzel", "yarın İstanbul'a gidiyorum", "çok teşekkür ederim",
           "istasyon nerede", "hafta sonu denize gidiyoruz", "kedi kanepede uyuyor", "soruyu anlamadım"],
}
MALE = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE = ("f1", "f2", "f3", "f4", "f5")
LANGUAGE_NAMES = {"fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "ru": "Russian",
                  "cmn": "Chinese", "ja": "Japanese", "hi": "Hindi", "ar": "Arabic", "pt": "Portuguese", "tr": "Turkish"}

SPEECH = [
    Concept("speech_en_male", ("a man speaking English", "a man talking", "male voice speaking"), "speech",
            {"language": "en", "voices": MALE}),
    Concept("speech_en_female", ("a woman speaking English", "a woman talking", "female voice speaking"), "speech",
            {"language": "en", "voices": FEMALE}),
    Concept("whisper", ("someone whispering", "a whispered voice"), "speech",
            {"language": "en", "voices": ("whisper", "whisperf")}),
    *[Concept(f"speech_{code}", (f"someone speaking {name}", f"{name} speech", f"a voice talking in {name}"), "speech",
              {"language": code, "voices": MALE + FEMALE}) for code, name in LANGUAGE_NAMES.items()],
]

SOX = [
    Concept("sine_tone", ("a pure sine tone", "a steady test tone"), "sox", {"recipe": "sine"}),
    Concept("beeps", ("electronic beeping", "a series of short beeps"), "sox", {"recipe": "beeps"}),
    Concept("hum", ("a low electrical hum", "mains hum buzzing"), "sox", {"recipe": "hum"}),
    Concept("white_noise", ("white noise", "radio static hiss"), "sox", {"recipe": "white"}),
    Concept("brown_noise", ("a deep rumbling noise", "brown noise rumble"), "sox", {"recipe": "brown"}),
    Concept("siren", ("a siren wailing", "an emergency siren"), "sox", {"recipe": "siren"}),
    Concept("sweep", ("a rising tone sweep", "a frequency sweep going up"), "sox", {"recipe": "sweep"}),
    Concept("dial_tone", ("a telephone dial tone",), "sox", {"recipe": "dial"}),
    Concept("busy_signal", ("a telephone busy signal",), "sox", {"recipe": "busy"}),
    Concept("morse", ("morse code", "morse code beeps"), "sox", {"recipe": "morse"}),
    Concept("ticking", ("a clock ticking", "a ticking metronome"), "sox", {"recipe": "tick"}),
    Concept("buzzer", ("a harsh buzzer", "a square wave buzz"), "sox", {"recipe": "buzzer"}),
    Concept("silence", ("silence", "near silence, a quiet room"), "sox", {"recipe": "silence"}),
    Concept("heartbeat", ("a heartbeat", "a heart beating"), "sox", {"recipe": "heartbeat"}),
]

MT = "/usr/share/games/minetest/games/minetest_game/mods/*/sounds/"
STK = "/usr/share/games/supertuxkart/data/"
FD = "/usr/share/sounds/freedesktop/stereo/"
FILES = [
    _files("footsteps", ("footsteps", "someone walking"), MT + "default_*_footstep*.ogg"),
    _files("breaking_glass", ("glass breaking", "a window shattering"), MT + "default_break_glass*.ogg", STK + "sfx/break.ogg"),
    _files("digging", ("digging in dirt", "a shovel digging gravel"),
           MT + "default_dig_crumbly.ogg", MT + "default_gravel_d*.ogg",
           MT + "default_dug_node*.ogg"),
    _files("chopping", ("chopping wood", "an axe hitting wood"), MT + "default_dig_choppy*.ogg"),
    _files("metal", ("metal clanking", "hitting metal with a hammer"),
           MT + "default_dig_metal.ogg", MT + "default_dug_metal*.ogg",
           MT + "default_place_node_metal*.ogg", STK + "sfx/metal_clang.ogg", STK + "sfx/anvil.ogg", STK + "sfx/hammer.ogg"),
    _files("door", ("a door opening and closing", "a creaking door"), MT + "doors_*.ogg", MT + "default_chest_*.ogg",
           MT + "xpanes_*.ogg"),
    _files("fire", ("a fire crackling", "a campfire burning"),
           MT + "fire_fire*.ogg", MT + "fire_large.ogg", MT + "fire_small.ogg",
           MT + "default_furnace_active.ogg"),
    _files("water", ("running water", "a stream flowing", "a waterfall"),
           MT + "env_sounds_water*.ogg", STK + "sfx/river_loop.ogg",
           STK + "sfx/waterfall_loop_2.ogg"),
    _files("lava", ("bubbling lava", "something boiling and bubbling"),
           MT + "env_sounds_lava*.ogg", MT + "default_cool_lava*.ogg"),
    _files("explosion", ("an explosion", "a loud blast"), MT + "tnt_explode.ogg", STK + "sfx/explosion.ogg",
           STK + "sfx/bubblegum_explode.ogg"),
    _files("hiss", ("a hissing sound", "steam hissing"), MT + "fire_extinguish_flame*.ogg", MT + "tnt_gunpowder_burning.ogg",
           MT + "default_item_smoke.ogg"),
    _files("cart", ("a cart rolling on rails",), MT + "carts_cart_moving*.ogg"),
    _files("splash", ("splashing in water", "a splash"), MT + "default_water_footstep*.ogg", STK + "sfx/splash.ogg"),
    _files("engine", ("a car engine", "an engine revving"), STK + "sfx/engine_*.ogg", STK + "sfx/car_*.ogg"),
    _files("crash", ("a car crash", "a loud crash"), STK + "sfx/crash*.ogg"),
    _files("skid", ("tires skidding", "car tires screeching"), STK + "sfx/skid.ogg", STK + "karts/*/skid.ogg"),
    _files("train", ("a steam train", "a steam locomotive"),
           STK + "library/*/steamLocomotive.ogg", STK + "tracks/*/steamLocomotive.ogg"),
    _files("birds", ("exotic birds calling", "birds in a jungle"), STK + "sfx/exotic-birds*.ogg"),
    _files("music", ("video game music", "upbeat background music", "a song"), STK + "music/*.ogg", STK + "tracks/*/*heme*.ogg"),
    _files("fanfare", ("a victory fanfare", "a short triumphant jingle"),
           STK + "sfx/last_lap_fanfare.ogg", STK + "sfx/gp_end.ogg",
           STK + "sfx/race_finish*.ogg", STK + "sfx/goal_scored.ogg"),
    _files("scifi", ("sci-fi spaceship sounds", "a laser zap"), STK + "sfx/spaceship.ogg", STK + "sfx/forcefield.ogg",
           STK + "sfx/portal.ogg", STK + "sfx/tractor_beam.ogg", STK + "sfx/shoot.ogg", STK + "tracks/*/spaceship*.ogg"),
    _files("pain", ("a man grunting in pain", "someone getting hurt"), STK + "sfx/ugh.ogg", MT + "player_damage.ogg",
           STK + "sfx/WilhelmScream.ogg"),
    _files("notification", ("a notification chime", "a computer notification sound"), FD + "message*.oga", FD + "complete.oga",
           FD + "window-attention.oga", FD + "dialog-information.oga", FD + "bell.oga", FD + "service-log*.oga",
           FD + "device-*.oga", FD + "network-*.oga", FD + "power-*.oga", FD + "window-question.oga"),
    _files("error_sound", ("an error alert sound", "a warning beep from a computer"), FD + "dialog-error.oga",
           FD + "dialog-warning.oga", FD + "suspend-error.oga", STK + "sfx/locked.ogg", STK + "sfx/bzzt.ogg"),
    _files("camera", ("a camera shutter click", "taking a photo"), FD + "camera-shutter.oga", FD + "screen-capture.oga"),
    _files("phone_ring_file", ("a telephone ringing", "a phone ringing"), FD + "phone-incoming-call.oga"),
    _files("alarm", ("an alarm clock ringing", "an alarm going off"), FD + "alarm-clock-elapsed.oga"),
    _files("rain", ("rain falling", "a rainstorm"), STK + "sfx/rain.ogg"),
    _files("thunder", ("thunder", "a thunderstorm"), STK + "sfx/thunder.ogg"),
    _files("cow", ("a cow mooing",), STK + "tracks/*/cow.ogg"),
    _files("sheep", ("a sheep bleating",), STK + "tracks/*/sheep.ogg"),
    _files("boing", ("a cartoon boing", "a springy bounce"), STK + "sfx/boing.ogg", STK + "sfx/ball_bounce.ogg"),
    _files("fireworks", ("fireworks", "fireworks exploding"), STK + "sfx/fireworks_show.ogg"),
    _files("crowd", ("a crowd of people chatting", "a busy restaurant"), STK + "sfx/lenautile_restaurant.ogg"),
    _files("jet", ("a jet airplane", "a jet engine roaring"), STK + "sfx/airplane_jetEngine.ogg"),
    _files("announcement", ("an announcement over a loudspeaker", "an airport announcement"), STK + "sfx/sara_airport_pa.ogg"),
    _files("clock_file", ("a clock ticking", "a ticking metronome"), STK + "sfx/clock.ogg"),
    _files("countdown", ("a race start countdown", "countdown beeps"),
           STK + "sfx/pre_start_race.ogg", STK + "sfx/start_race.ogg"),
]

CONCEPTS: list[Concept] = INSTRUMENTS + DRUMS + SPEECH + SOX + FILES
